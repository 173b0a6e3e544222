"""Serve a fencebox Classifier with KServe's own Python ModelServer (Open Inference Protocol v2).

An independently written V2 server to put *behind* fencebox: used by the tests, the benchmark and
docker/compose.yaml.  Needs the ``kserve`` package (a test extra)::

    python -m fencebox.service.kserve_upstream --model builtin:mnist --name mnist --http_port 8080 \
        [--grpc --grpc_port 8081]

Input ``input``: UINT8 or FP32 (values in [0, 1]) ``[-1, H, W, C]``; output ``logits`` FP32.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np


def build_model(name: str, ref: str) -> Any:
    """A ``kserve.Model`` named ``name`` serving the fencebox model ``ref`` on CPU."""
    import kserve
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    from fencebox.models import load_model

    classifier = load_model(ref)
    h, w, c = classifier.input_shape

    class FenceboxKServeModel(kserve.Model):
        """KServe model wrapping a fencebox Classifier."""

        def load(self) -> bool:
            self.ready = True
            return True

        def get_input_types(self) -> list[dict[str, Any]]:
            return [{"name": "input", "datatype": "UINT8", "shape": [-1, h, w, c]}]

        def get_output_types(self) -> list[dict[str, Any]]:
            return [{"name": "logits", "datatype": "FP32", "shape": [-1, classifier.num_classes]}]

        async def predict(
            self, payload: InferRequest, headers: dict[str, str] | None = None, response_headers: Any = None
        ) -> InferResponse:
            x = payload.inputs[0].as_numpy()
            if x.dtype != np.uint8:
                x = np.clip(np.rint(x.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
            if x.ndim != 4 or x.shape[1:] != (h, w, c):
                raise kserve.errors.InvalidInput(f"expected [-1, {h}, {w}, {c}], got {list(x.shape)}")
            logits = classifier.predict_logits(np.array(x, order="C")).astype(np.float32)  # writable copy
            out = InferOutput(name="logits", shape=list(logits.shape), datatype="FP32")
            out.set_data_from_numpy(logits, binary_data=payload.use_binary_outputs)
            return InferResponse(
                response_id=payload.id or "",
                model_name=self.name,
                infer_outputs=[out],
                use_binary_outputs=payload.use_binary_outputs,
            )

    model = FenceboxKServeModel(name)
    model.load()
    return model


def main(argv: list[str] | None = None) -> None:
    """Parse ``--model``/``--name`` (KServe parses its own flags, e.g. ``--http_port``) and serve."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--model", default="builtin:mnist", help="fencebox model reference")
    parser.add_argument("--name", default="mnist", help="V2 model name")
    parser.add_argument(
        "--grpc", action="store_true", help="also serve the gRPC Open Inference Protocol on --grpc_port"
    )
    args, rest = parser.parse_known_args(argv)
    sys.argv = [sys.argv[0], *rest]  # kserve reads its flags from sys.argv at import
    import kserve

    model = build_model(args.name, args.model)
    kserve.ModelServer(enable_grpc=args.grpc).start([model])


if __name__ == "__main__":
    main()
