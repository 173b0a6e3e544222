"""REST endpoints: ``POST /v1/purify``, ``POST /v1/predict``, ``GET /v1/models`` and ``GET /metrics``."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from fencebox.service.bodies import IMAGE_BODY_OPENAPI, read_image_bytes
from fencebox.service.common import ERROR_RESPONSES, runtime_of, with_deadline
from fencebox.service.metrics import record_stage
from fencebox.service.policy import rest_answers
from fencebox.service.routes_ui import purify_stages, refuse_seed_without_stages, seed_query
from fencebox.service.runtime import Route, Runtime
from fencebox.transforms.base import Transform

router = APIRouter()


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


async def _admit(
    request: Request, model: str | None, chain: str | None
) -> tuple[Runtime, Route, Transform, bytes]:
    """What both image endpoints do first: authenticate, pick the route and its chain, charge, read the image.

    The order matters: a wrong key, route or override is refused before the budget is charged, and
    the body is read only once the request is allowed.
    """
    rt = runtime_of(request)
    who = rt.guard.identify(request)
    route = rt.route(model)
    chosen = route.chain_for(chain)
    rt.guard.charge(who)
    data = await read_image_bytes(request, route.config.limits.max_body_bytes)
    return rt, route, chosen, data


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
    rt, route, chosen, data = await _admit(request, model, chain)
    body, media, t_dec, t_chain, t_enc = await with_deadline(
        route, rt.run(route.purify_image, data, chosen, format)
    )
    for stage, s in (("decode", t_dec), ("chain", t_chain), ("encode", t_enc)):
        record_stage(request.scope, stage, s)
        rt.metrics.stage.labels(route.name, stage).observe(s)
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
    rt, route, chosen, data = await _admit(request, model, chain)

    async def work() -> tuple[Any, ...]:
        with route.batcher.expect():
            purified, t_dec, t_chain = await rt.run(route.prepare, data, chosen)
        out, t_queue, t_model = await route.batcher.submit(purified)
        return out, t_dec, t_chain, t_queue, t_model

    out, t_dec, t_chain, t_queue, t_model = await with_deadline(route, work())
    for stage, s in (("decode", t_dec), ("chain", t_chain), ("queue", t_queue), ("model", t_model)):
        record_stage(request.scope, stage, s)
        if stage != "model":
            rt.metrics.stage.labels(route.name, stage).observe(s)
    b = route.backend
    answer = rest_answers(out, b.outputs, b.class_names, route.config.policy, route.config.topk)[0]
    headers = {"X-Fencebox-Chain": str(chosen)}
    return JSONResponse({"model": route.name, **answer}, headers=headers)


@router.get("/v1/models", summary="List the model routes")
async def models(request: Request) -> dict[str, Any]:
    """Each route's name, chain, backend, input shape and output policy."""
    rt = runtime_of(request)
    rt.guard.identify(request)
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


@router.get("/metrics", response_class=Response, summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    """The Prometheus exposition of this service's registry."""
    rt = runtime_of(request)
    for r in rt.routes.values():
        rt.metrics.queue_depth.labels(r.name).set(r.batcher.depth)
    return Response(generate_latest(rt.metrics.registry), media_type=CONTENT_TYPE_LATEST)
