"""The Open Inference Protocol data plane, independent of the wire it arrives on.

REST (:mod:`fencebox.service.routes_v2`) and gRPC (:mod:`fencebox.service.grpc_server`) decode
their own messages into :class:`~fencebox.service.v2codec.Tensor` lists and call the functions
here, so both get the same input checks, query budget, chain, batching, deadline and output
policy.  Everything raises the service's own errors (``BadRequest``, ``TooManyRequests``...);
each protocol maps them to its status codes.

Each route is a V2 model with one input ``input``: UINT8 ``[-1, H, W, C]`` (or FP32 of the same
shape with values in [0, 1]), and the outputs its policy allows: ``label`` (INT64), plus ``topk``
(INT64) or ``scores`` (FP32).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import fencebox
from fencebox.service.common import with_deadline
from fencebox.service.errors import BadRequest
from fencebox.service.policy import v2_output_signature, v2_outputs
from fencebox.service.runtime import Route, Runtime, is_identity
from fencebox.service.v2codec import Tensor

INPUT_NAME = "input"

EXTENSIONS = ["binary_tensor_data", "model_repository"]
"""Protocol extensions this server implements (binary data: REST only; gRPC always sends raw)."""


def expected(route: Route) -> str:
    """What the route's input must look like, appended to every input error."""
    h, w, c = route.backend.input_shape
    return f"expected one input '{INPUT_NAME}', datatype UINT8 (or FP32 in [0, 1]), shape [-1, {h}, {w}, {c}] (NHWC)"


def server_metadata() -> dict[str, Any]:
    """Name, version and protocol extensions of this server."""
    return {"name": "fencebox", "version": fencebox.__version__, "extensions": list(EXTENSIONS)}


def input_signature(route: Route) -> dict[str, Any]:
    """The V2 metadata of the route's one input."""
    h, w, c = route.backend.input_shape
    return {"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, h, w, c]}


def output_names(route: Route) -> list[str]:
    """The outputs the route's policy exposes, in order."""
    classes = len(route.backend.class_names) or 1
    return [o["name"] for o in v2_output_signature(route.config.policy, route.config.topk, classes)]


def model_metadata(route: Route) -> dict[str, Any]:
    """The V2 signature of the route: its input and the outputs its policy exposes."""
    classes = len(route.backend.class_names) or 1
    return {
        "name": route.name,
        "versions": ["1"],
        "platform": "fencebox",
        "inputs": [input_signature(route)],
        "outputs": v2_output_signature(route.config.policy, route.config.topk, classes),
        "parameters": {"chain": str(route.chain), "class_names": route.backend.class_names},
    }


async def repository_index(rt: Runtime, ready_only: bool = False) -> list[dict[str, str]]:
    """The model repository extension's index: every route with its state (READY or UNAVAILABLE)."""
    index = []
    for name, route in rt.routes.items():
        ok = rt.started and await route.backend.ready()
        if ready_only and not ok:
            continue
        entry = {"name": name, "version": "1", "state": "READY" if ok else "UNAVAILABLE"}
        entry["reason"] = "" if ok else f"backend not ready ({route.backend.describe()})"
        index.append(entry)
    return index


def to_batch(route: Route, tensors: list[Tensor]) -> np.ndarray:
    """The request's one input as a writable uint8 ``(N, H, W, C)`` batch; BadRequest otherwise."""
    if len(tensors) != 1 or tensors[0].name != INPUT_NAME:
        names = [t.name for t in tensors]
        raise BadRequest(f"got inputs {names}; {expected(route)}")
    t = tensors[0]
    h, w, c = route.backend.input_shape
    if len(t.shape) != 4 or tuple(t.shape[1:]) != (h, w, c) or t.shape[0] < 1:
        raise BadRequest(f"input '{INPUT_NAME}' has shape {t.shape}; {expected(route)}")
    if t.shape[0] > route.config.limits.max_images:
        raise BadRequest(
            f"{t.shape[0]} images in one request; this route accepts at most {route.config.limits.max_images}; {expected(route)}"
        )
    if t.datatype == "UINT8":
        return np.array(t.data, dtype=np.uint8, order="C", copy=True)  # writable: torch refuses read-only
    if t.datatype == "FP32":
        x = t.data.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
            raise BadRequest(
                f"FP32 input '{INPUT_NAME}' must hold finite values in [0, 1]; {expected(route)}"
            )
        return np.ascontiguousarray(np.rint(x * 255.0).astype(np.uint8))
    raise BadRequest(f"input '{INPUT_NAME}' has datatype {t.datatype}; {expected(route)}")


def select_outputs(route: Route, requested: list[str] | None) -> list[str]:
    """The outputs to answer: all the policy allows, or the requested ones (each must be allowed)."""
    names = output_names(route)
    if not requested:
        return names
    for name in requested:
        if name not in names:
            raise BadRequest(f"output {name!r} is not available; this model's outputs are {names}")
    return list(requested)


@dataclass
class InferResult:
    """What a V2 inference produced: the chosen output tensors (in the requested order) and stage times."""

    tensors: list[Tensor]
    timings: dict[str, float] = field(default_factory=dict)


async def infer(
    rt: Runtime, route: Route, who: str, inputs: list[Tensor], requested: list[str] | None = None
) -> InferResult:
    """Check the inputs, charge ``who`` one query per image, purify, classify, apply the output policy.

    ``who`` is the caller's identity from :meth:`~fencebox.service.security.Guard.authenticate`.
    """
    batch = to_batch(route, inputs)
    rt.guard.charge(who, float(batch.shape[0]))
    chosen = select_outputs(route, requested)

    async def work() -> tuple[Any, ...]:
        with route.batcher.expect():
            s = time.perf_counter()
            if is_identity(route.chain):  # nothing to run: skip the thread hop
                purified = route.purify_batch(batch, route.chain)
            else:
                purified = await rt.run(route.purify_batch, batch, route.chain)
            t_chain = time.perf_counter() - s
        out, t_queue, t_model = await route.batcher.submit(purified)
        return out, t_chain, t_queue, t_model

    out, t_chain, t_queue, t_model = await with_deadline(route, work())
    timings = {"chain": t_chain, "queue": t_queue, "model": t_model}
    rt.metrics.stage.labels(route.name, "chain").observe(t_chain)
    rt.metrics.stage.labels(route.name, "queue").observe(t_queue)
    policy, k = route.config.policy, route.config.topk
    tensors = [t for t in v2_outputs(out, route.backend.outputs, policy, k) if t.name in chosen]
    tensors.sort(key=lambda t: chosen.index(t.name))
    return InferResult(tensors, timings)
