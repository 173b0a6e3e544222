"""ONNX models (``fencebox.models.onnx_model``): export a built-in, load it back, get the same predictions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fencebox.models import load_model


def test_onnx_round_trip(tmp_path: Path, digits: np.ndarray) -> None:
    model = load_model("builtin:mnist", device="cpu")
    path = tmp_path / "mnist.onnx"
    module = model.torch_module()
    assert module is not None
    torch.onnx.export(
        module,
        (torch.rand(1, 1, 28, 28),),
        str(path),
        input_names=["x"],
        output_names=["logits"],
        dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}},
        dynamo=False,
    )
    loaded = load_model(f"onnx:{path}", device="cpu")  # shape from the ONNX input, classes from a dry run
    assert loaded.card.input_shape == (28, 28, 1) and loaded.num_classes == 10
    assert loaded.torch_module() is None
    assert np.array_equal(loaded.predict(digits), model.predict(digits))
    np.testing.assert_allclose(loaded.predict_logits(digits), model.predict_logits(digits), atol=1e-4)
    x = torch.from_numpy(digits[:3]).permute(0, 3, 1, 2).float() / 255
    np.testing.assert_allclose(loaded.logits(x).numpy(), model.logits(x).detach().numpy(), atol=1e-4)
