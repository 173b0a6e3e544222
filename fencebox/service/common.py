"""Pieces the endpoint modules share: the runtime lookup, the request deadline, documented errors."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request

from fencebox.service.errors import GatewayTimeout
from fencebox.service.runtime import Route, Runtime

T = TypeVar("T")

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"error": text, "code": "..."}}}}
    for code, text in (
        (400, "corrupt, truncated or empty image, or a bad chain spec"),
        (401, "API key missing or wrong"),
        (403, "chain override not allowed on this route"),
        (404, "no such model route"),
        (413, "body or image too large (decompression bombs included)"),
        (415, "content type or image format not supported"),
        (429, "query budget exhausted (Retry-After)"),
        (502, "upstream down or bad answer"),
        (503, "queue full (Retry-After)"),
        (504, "deadline or upstream timeout"),
    )
}
"""OpenAPI documentation of the error answers (all JSON ``{"error", "code"}``)."""


def runtime_of(request: Request) -> Runtime:
    """The app's live Runtime (built by the lifespan)."""
    rt: Runtime = request.app.state.runtime
    return rt


async def with_deadline(route: Route, work: Awaitable[T]) -> T:
    """Await ``work`` within the route's ``limits.timeout_s``; past it, answer 504."""
    limit = route.config.limits.timeout_s
    try:
        async with asyncio.timeout(limit):
            return await work
    except TimeoutError:
        raise GatewayTimeout(f"route '{route.name}' did not answer within {limit:g} s") from None
