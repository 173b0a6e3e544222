"""The protocol-neutral data plane: what a request does once it is authenticated and routed.

REST (:mod:`fencebox.service.routes_v1`, :mod:`fencebox.service.routes_v2`) and gRPC
(:mod:`fencebox.service.grpc_server`) call these functions with bytes, tensors or arrays; nothing
here knows HTTP.  A request is admitted (:func:`admitted`: the route's in-flight limit and its
deadline), each stage runs through :meth:`Runtime.stage` (timed, off the event loop, cancellable),
and the whole request runs under its deadline (504, work cancelled).  Everything raises the
service's own errors (``BadRequest``, ``TooManyRequests``...); each protocol maps them to its codes.

Each route is a V2 model with one input ``input``: UINT8 ``[-1, H, W, C]`` (or FP32 of the same
shape with values in [0, 1]), and the outputs its policy allows: ``label`` (INT64), plus ``topk``
(INT64) or ``scores`` (FP32).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

import fencebox
from fencebox import image
from fencebox.service import v2codec
from fencebox.service.errors import BadRequest
from fencebox.service.policy import v2_output_signature, v2_outputs
from fencebox.service.runtime import INLINE_PARSE_BYTES, RequestContext, Route, Runtime, is_identity
from fencebox.service.v2codec import Tensor
from fencebox.transforms.base import Transform

T = TypeVar("T")

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


@contextlib.contextmanager
def admitted(route: Route) -> Iterator[RequestContext]:
    """Hold one of the route's in-flight slots (503 at once when none is free) and start the deadline."""
    route.admission.enter()
    try:
        yield RequestContext.start(route)
    finally:
        route.admission.leave()


async def _model(rt: Runtime, ctx: RequestContext, purified: np.ndarray) -> np.ndarray:
    out, t_queue, t_model = await ctx.route.batcher.submit(purified)
    rt.record(ctx, "queue", t_queue)
    rt.record(ctx, "model", t_model)
    return out


async def predict(rt: Runtime, ctx: RequestContext, data: bytes, chain: Transform) -> np.ndarray:
    """Decode (no more than the model needs), purify and classify one encoded image -> (1, classes)."""
    route = ctx.route

    async def work() -> np.ndarray:
        with route.batcher.expect():
            batch = await rt.stage(ctx, "decode", route.decode_for_model, data, chain)
            purified = await rt.stage(ctx, "chain", route.purify_batch, batch, chain)
        return await _model(rt, ctx, purified)

    out: np.ndarray = await rt.within_deadline(ctx, work())
    return out


async def purify(
    rt: Runtime, ctx: RequestContext, data: bytes, chain: Transform, fmt: str
) -> tuple[bytes, str]:
    """Decode (full size), purify and encode one image -> (bytes, media type)."""
    route = ctx.route

    async def work() -> tuple[bytes, str]:
        batch = await rt.stage(ctx, "decode", route.decode_full, data, chain)
        out = await rt.stage(ctx, "chain", route.run_chain, batch, chain)
        return await rt.stage(ctx, "encode", image.encode, out[0], fmt)

    result: tuple[bytes, str] = await rt.within_deadline(ctx, work())
    return result


async def classify_after(
    rt: Runtime, ctx: RequestContext, stage: str, fn: Callable[..., tuple[T, np.ndarray]], *args: Any
) -> tuple[T, np.ndarray]:
    """Run ``fn`` as one stage (off the loop, cancellable) and classify the batch it returns.

    For work that produces more than a purified batch (e.g. every stage's image for the playground):
    ``fn`` returns ``(result, batch)``; the answer is ``(result, logits)``, under the request's deadline.
    """
    route = ctx.route

    async def work() -> tuple[T, np.ndarray]:
        with route.batcher.expect():
            result, batch = await rt.stage(ctx, stage, fn, *args)
        return result, await _model(rt, ctx, batch)

    answer: tuple[T, np.ndarray] = await rt.within_deadline(ctx, work())
    return answer


async def parse_v2(
    rt: Runtime, ctx: RequestContext, body: bytes, header_length: str | None
) -> tuple[v2codec.Message, np.ndarray]:
    """Parse a V2 request body into its message and uint8 batch: small ones inline, large ones off the loop.

    Bodies up to ``INLINE_PARSE_BYTES`` cost less to parse than a thread hop; larger ones go to the
    decode pool, and those past ``PROCESS_PARSE_BYTES`` to a worker process (no GIL held meanwhile).
    """
    inline = len(body) <= INLINE_PARSE_BYTES
    pool = None if inline else rt.parse_pool(len(body))
    work = rt.stage(
        ctx, "parse", v2codec.decode_images, body, header_length, ctx.route.expect, pool=pool, inline=inline
    )
    result: tuple[v2codec.Message, np.ndarray] = await rt.within_deadline(ctx, work)
    return result


async def classify(rt: Runtime, ctx: RequestContext, batch: np.ndarray) -> np.ndarray:
    """Purify a decoded uint8 NHWC batch with the route's chain and classify it -> (N, classes).

    The chain's declared cost is checked first (413 naming the limit).
    """
    route = ctx.route
    n, h, w, c = batch.shape
    route.check_cost(route.chain, (n, h, w, c))

    async def work() -> np.ndarray:
        with route.batcher.expect():
            if is_identity(route.chain):  # nothing to run: skip the thread hop
                purified = route.purify_batch(batch, route.chain)
            else:
                purified = await rt.stage(ctx, "chain", route.purify_batch, batch, route.chain)
        return await _model(rt, ctx, purified)

    out: np.ndarray = await rt.within_deadline(ctx, work())
    return out


async def infer_batch(
    rt: Runtime, ctx: RequestContext, batch: np.ndarray, requested: list[str] | None = None
) -> InferResult:
    """Classify an admitted, charged uint8 batch and apply the output policy (the V2 answer)."""
    route = ctx.route
    chosen = select_outputs(route, requested)
    out = await classify(rt, ctx, batch)
    policy, k = route.config.policy, route.config.topk
    tensors = [t for t in v2_outputs(out, route.backend.outputs, policy, k) if t.name in chosen]
    tensors.sort(key=lambda t: chosen.index(t.name))
    return InferResult(tensors, ctx.timings)


async def infer(
    rt: Runtime, route: Route, who: str, inputs: list[Tensor], requested: list[str] | None = None
) -> InferResult:
    """Admit, check the inputs, charge ``who`` one query per image, purify, classify, apply the policy.

    For protocols that decode their own tensors (gRPC); ``who`` is the caller's identity from
    :meth:`~fencebox.service.security.Guard.authenticate`.
    """
    with admitted(route) as ctx:
        batch = to_batch(route, inputs)
        rt.guard.charge_rest(who, float(batch.shape[0]), paid=0.0)
        return await infer_batch(rt, ctx, batch, requested)
