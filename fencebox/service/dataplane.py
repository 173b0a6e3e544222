"""The protocol-neutral data plane: what a request does once it is authenticated, charged and admitted.

REST and V2 endpoints (and any other front end, e.g. gRPC) call these functions with bytes or
arrays; nothing here knows HTTP.  Each stage runs through :meth:`Runtime.stage` (timed, off the
event loop, cancellable), and the whole request runs under its deadline (504, work cancelled).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from fencebox import image
from fencebox.service import v2codec
from fencebox.service.runtime import RequestContext, Route, Runtime, is_identity
from fencebox.transforms.base import Transform


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


async def parse_v2(
    rt: Runtime, ctx: RequestContext, body: bytes, header_length: str | None
) -> tuple[v2codec.Message, np.ndarray]:
    """Parse a V2 request body into its message and uint8 batch, off the loop (a process when large)."""
    pool = rt.parse_pool(len(body))
    work = rt.stage(ctx, "parse", v2codec.decode_images, body, header_length, ctx.route.expect, pool=pool)
    result: tuple[v2codec.Message, np.ndarray] = await rt.within_deadline(ctx, work)
    return result


async def infer(rt: Runtime, ctx: RequestContext, batch: np.ndarray) -> np.ndarray:
    """Purify a decoded uint8 NHWC batch with the route's chain and classify it -> (N, classes)."""
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
