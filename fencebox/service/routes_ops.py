"""Open endpoints for operators and probes (no API key): ``GET /v2``, ``/v2/health/live``,
``/v2/health/ready`` and ``/metrics``.  Everything else sits behind the routers' auth dependency."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fencebox.service import dataplane
from fencebox.service.common import runtime_of

router = APIRouter()


@router.get("/v2", summary="Server metadata", tags=["Open Inference Protocol v2"])
async def server_metadata() -> dict[str, Any]:
    """Name, version and protocol extensions of this server."""
    return dataplane.server_metadata()


@router.get("/v2/health/live", summary="Liveness", tags=["Open Inference Protocol v2"])
async def live() -> dict[str, bool]:
    """The process answers (the event loop is never blocked by a request's work)."""
    return {"live": True}


@router.get(
    "/v2/health/ready",
    summary="Readiness",
    responses={503: {"description": "a backend is not ready"}},
    tags=["Open Inference Protocol v2"],
)
async def ready(request: Request) -> JSONResponse:
    """Ready when every route's backend is ready (upstreams are asked, cached for a second)."""
    rt = runtime_of(request)
    down = [name for name, r in rt.routes.items() if not await r.backend.ready()]
    if not rt.started or down:
        msg = "starting" if not rt.started else f"not ready: {', '.join(down)}"
        return JSONResponse({"error": msg, "code": "not_ready", "ready": False}, status_code=503)
    return JSONResponse({"ready": True})


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    """The Prometheus exposition of this service's registry."""
    rt = runtime_of(request)
    for r in rt.routes.values():
        rt.metrics.queue_depth.labels(r.name).set(r.batcher.depth)
        rt.metrics.in_flight.labels(r.name).set(r.admission.in_flight)
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)
