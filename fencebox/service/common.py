"""Pieces the endpoint modules share: the runtime lookup, the auth dependency, reading bodies in time,
Server-Timing from the runtime's stage timings, and the documented errors."""

from __future__ import annotations

import asyncio
from typing import Any, TypeVar

from starlette.requests import Request

from fencebox.service.bodies import read_body, read_image_bytes
from fencebox.service.errors import RequestTimeout
from fencebox.service.metrics import record_stage
from fencebox.service.runtime import RequestContext, Route, Runtime

T = TypeVar("T")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"error": text, "code": "..."}}}}
    for code, text in (
        (400, "corrupt, truncated or empty image, or a bad chain spec"),
        (401, "API key missing or wrong"),
        (403, "chain override not allowed on this route"),
        (404, "no such model route"),
        (408, "the body did not arrive within limits.read_timeout_s"),
        (413, "body, image, frames or chain cost over the route's limits (decompression bombs included)"),
        (415, "content type or image format not supported"),
        (429, "query budget exhausted (Retry-After)"),
        (502, "upstream down or bad answer"),
        (503, "route at its in-flight limit or queue full (Retry-After)"),
        (504, "deadline or upstream timeout"),
    )
}
"""OpenAPI documentation of the error answers (all JSON ``{"error", "code"}``)."""


def runtime_of(request: Request) -> Runtime:
    """The app's live Runtime (built by the lifespan)."""
    rt: Runtime = request.app.state.runtime
    return rt


async def authenticate(request: Request) -> None:
    """Router dependency: check the API key (401) and note the caller's identity on ``request.state``.

    Attached to every router with ``dependencies=[Depends(authenticate)]``, so a new endpoint
    cannot forget it; the open endpoints (health, server metadata, metrics) live on their own router.
    """
    request.state.identity = runtime_of(request).guard.identify(request)


def identity_of(request: Request) -> str:
    """The caller's identity noted by :func:`authenticate`."""
    who: str = request.state.identity
    return who


def server_timing(request: Request, ctx: RequestContext) -> None:
    """Copy the runtime's stage timings of this request into its Server-Timing header."""
    for stage, seconds in ctx.timings.items():
        record_stage(request.scope, stage, seconds)


async def read_within(request: Request, route: Route, max_bytes: int, image_body: bool) -> bytes:
    """Read the body (raw image or multipart when ``image_body``, else raw) within ``limits.read_timeout_s``.

    A slow upload is cut off with 408 instead of holding a slot for as long as the client likes.
    """
    limit = route.config.limits.read_timeout_s
    try:
        async with asyncio.timeout(limit):
            if image_body:
                return await read_image_bytes(request, max_bytes)
            return await read_body(request, max_bytes)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {limit:g} s (limits.read_timeout_s)") from None
