"""REST endpoints: ``POST /v1/purify``, ``POST /v1/predict`` and ``GET /v1/models``.

Order of a request, cheapest refusal first: API key (router dependency), route, chain override
(parsed, not run), the route's in-flight limit (503), the query budget (429), then the body (413 past
the size limit, 408 past ``read_timeout_s``), and only then the data plane (decode, cost check, chain,
model) under the deadline.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from fencebox.service import dataplane
from fencebox.service.bodies import IMAGE_BODY_OPENAPI
from fencebox.service.common import (
    ERROR_RESPONSES,
    authenticate,
    identity_of,
    read_within,
    runtime_of,
    server_timing,
)
from fencebox.service.policy import rest_answers
from fencebox.service.routes_ui import purify_stages, refuse_seed_without_stages, seed_query

router = APIRouter(dependencies=[Depends(authenticate)])
"""The REST endpoints; every one of them requires the API key (when keys are configured)."""


class TopK(BaseModel):
    """One of the k most likely classes."""

    label: int
    class_name: str


class Prediction(BaseModel):
    """The answer of /v1/predict: always the label; topk or scores only when the route's policy allows."""

    model: str
    label: int
    class_name: str
    topk: list[TopK] | None = None
    scores: dict[str, float] | None = None


@router.post(
    "/v1/purify",
    openapi_extra=IMAGE_BODY_OPENAPI,
    responses={200: {"content": {"image/png": {}}, "description": "the purified image"}, **ERROR_RESPONSES},
    response_class=Response,
    summary="Purify an image with the route's chain",
)
async def purify(
    request: Request,
    model: str | None = Query(
        None, max_length=200, description="route whose chain to use (default route if unset)"
    ),
    chain: str | None = Query(None, max_length=2000, description="chain override, where the route allows it"),
    format: Literal["png", "jpeg", "webp", "bmp", "tiff"] = Query("png", description="output image format"),
    stages: bool = Query(
        False, description="answer JSON: every stage's image and time, and the model's answer"
    ),
    seed: int | None = seed_query(),
) -> Response:
    """Return the purified image; the header ``X-Fencebox-Chain`` echoes the chain that ran.

    With ``stages=true`` the answer is JSON instead (see :func:`~fencebox.service.routes_ui.purify_stages`).
    """
    if stages:
        return await purify_stages(request, model, chain, seed)
    refuse_seed_without_stages(seed)
    rt = runtime_of(request)
    route = rt.route(model)
    chosen = route.chain_for(chain)
    with dataplane.admitted(route) as ctx:
        rt.guard.charge(identity_of(request))
        data = await read_within(request, route, route.config.limits.max_body_bytes, image_body=True)
        try:
            body, media = await dataplane.purify(rt, ctx, data, chosen, format)
        finally:
            server_timing(request, ctx)
    return Response(body, media_type=media, headers={"X-Fencebox-Chain": str(chosen)})


@router.post(
    "/v1/predict",
    openapi_extra=IMAGE_BODY_OPENAPI,
    response_model=Prediction,
    response_model_exclude_none=True,
    responses=ERROR_RESPONSES,
    summary="Purify an image and classify it",
)
async def predict(
    request: Request,
    model: str | None = Query(None, max_length=200, description="route name (default route if unset)"),
    chain: str | None = Query(None, max_length=2000, description="chain override, where the route allows it"),
) -> JSONResponse:
    """Decode, purify and classify one image; answer only what the route's output policy allows."""
    rt = runtime_of(request)
    route = rt.route(model)
    chosen = route.chain_for(chain)
    with dataplane.admitted(route) as ctx:
        rt.guard.charge(identity_of(request))
        data = await read_within(request, route, route.config.limits.max_body_bytes, image_body=True)
        try:
            out = await dataplane.predict(rt, ctx, data, chosen)
        finally:
            server_timing(request, ctx)
    b = route.backend
    answer = rest_answers(out, b.outputs, b.class_names, route.config.policy, route.config.topk)[0]
    headers = {"X-Fencebox-Chain": str(chosen)}
    return JSONResponse({"model": route.name, **answer}, headers=headers)


@router.get("/v1/models", summary="List the model routes")
async def models(request: Request) -> dict[str, Any]:
    """Each route's name, chain, backend, input shape and output policy."""
    rt = runtime_of(request)
    return {
        "default": rt.settings.default.name,
        "models": [
            {
                "name": r.name,
                "chain": str(r.chain),
                "backend": r.backend.describe(),
                "input_shape": list(r.backend.input_shape),
                "policy": r.config.policy,
                "chain_override": r.config.allow_chain_override,
            }
            for r in rt.routes.values()
        ],
    }
