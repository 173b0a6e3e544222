"""Open Inference Protocol v2 (KServe) endpoints, so standard clients (tritonclient.http) work unchanged.

Each route is a V2 model with one input ``input``: UINT8 ``[-1, H, W, C]`` (or FP32 of the same
shape with values in [0, 1]), and the outputs its policy allows: ``label`` (INT64), plus ``topk``
(INT64) or ``scores`` (FP32).  JSON and binary tensor data are accepted and answered.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from fencebox.service import dataplane, v2codec
from fencebox.service.bodies import read_body
from fencebox.service.common import (
    ERROR_RESPONSES,
    authenticate,
    identity_of,
    read_within,
    runtime_of,
    server_timing,
)
from fencebox.service.errors import BadRequest, Overloaded, retry_after

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"], dependencies=[Depends(authenticate)])
"""The per-model V2 endpoints; all require the API key (health and server metadata are in routes_ops)."""

INPUT_NAME = dataplane.INPUT_NAME

_INFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A V2 inference request: JSON, or a JSON header followed by binary tensor data "
        "(header Inference-Header-Content-Length).",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["inputs"],
                    "properties": {
                        "id": {"type": "string"},
                        "parameters": {"type": "object"},
                        "inputs": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["name", "datatype", "shape"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "datatype": {"type": "string", "enum": ["UINT8", "FP32"]},
                                    "shape": {"type": "array", "items": {"type": "integer"}},
                                    "data": {"type": "array"},
                                    "parameters": {"type": "object"},
                                },
                            },
                        },
                        "outputs": {"type": "array", "items": {"type": "object"}},
                    },
                }
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.get("/models/{name}", summary="Model metadata", responses=ERROR_RESPONSES)
async def model_metadata(name: str, request: Request) -> dict[str, Any]:
    """The V2 signature of the route: its input and the outputs its policy exposes."""
    return dataplane.model_metadata(runtime_of(request).route(name))


@router.get("/models/{name}/ready", summary="Model readiness", responses=ERROR_RESPONSES)
async def model_ready(name: str, request: Request) -> JSONResponse:
    """200 when the route's backend can answer, else 503."""
    rt = runtime_of(request)
    route = rt.route(name)
    if not await route.backend.ready():
        raise Overloaded(f"model '{name}' is not ready ({route.backend.describe()})", headers=retry_after(1))
    return JSONResponse({"name": name, "ready": True})


def _binary_choice(msg: v2codec.Message) -> tuple[list[str] | None, bool | set[str]]:
    """The requested outputs (None: all) and which of them go as binary data, per the request."""
    default_binary = bool(msg.parameters.get("binary_data_output", False))
    if not msg.outputs:
        return None, default_binary
    chosen, binary = [], set()
    for o in msg.outputs:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise BadRequest("each requested output must be an object with a 'name'")
        chosen.append(o["name"])
        params = o.get("parameters") or {}
        if bool(params.get("binary_data", default_binary)) if isinstance(params, dict) else default_binary:
            binary.add(o["name"])
    return chosen, binary


@router.post(
    "/models/{name}/infer", openapi_extra=_INFER_BODY, summary="Inference", responses=ERROR_RESPONSES
)
async def infer(name: str, request: Request) -> Response:
    """Purify the input tensor's images with the route's chain and classify them.

    Charged one image before the body is read (a spent budget is a 429 without reading it), the
    rest once the shape is known; the body's limit follows from the route (``max_v2_body_bytes``).
    """
    rt = runtime_of(request)
    route = rt.route(name)
    who = identity_of(request)
    with dataplane.admitted(route) as ctx:
        rt.guard.charge(who)
        body = await read_within(request, route, route.max_v2_body_bytes, image_body=False)
        try:
            try:
                msg, batch = await dataplane.parse_v2(
                    rt, ctx, body, request.headers.get(v2codec.HEADER_LENGTH)
                )
            except v2codec.V2FormatError as exc:
                text = str(exc)
                raise BadRequest(
                    text if route.expect.describe in text else f"{text}; {route.expect.describe}"
                ) from None
            del body
            rt.guard.charge_rest(who, float(batch.shape[0]), paid=1.0)
            requested, binary = _binary_choice(msg)
            result = await dataplane.infer_batch(rt, ctx, batch, requested)
        finally:
            server_timing(request, ctx)
    head: dict[str, Any] = {"model_name": route.name, "model_version": "1"}
    if msg.id is not None:
        head["id"] = msg.id
    payload, headers = v2codec.encode(result.tensors, binary, head, key="outputs")
    return Response(payload, headers=headers, media_type=headers["content-type"])


@router.post("/repository/index", summary="Model repository index", responses=ERROR_RESPONSES)
async def repository_index(request: Request) -> JSONResponse:
    """The model repository extension: every route with its state; body ``{"ready": true}`` lists only ready ones."""
    rt = runtime_of(request)
    body = await read_body(request, 64 * 1024)
    ready_only = False
    if body.strip():
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
            raise BadRequest("the repository index request must be a JSON object (or empty)") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
            raise BadRequest(
                "the repository index request must be a JSON object with an optional boolean 'ready'"
            )
        ready_only = doc.get("ready", False)
    return JSONResponse(await dataplane.repository_index(rt, ready_only))
