"""Open Inference Protocol v2 (KServe) endpoints, so standard clients (tritonclient.http) work unchanged.

Each route is a V2 model with one input ``input``: UINT8 ``[-1, H, W, C]`` (or FP32 of the same
shape with values in [0, 1]), and the outputs its policy allows: ``label`` (INT64), plus ``topk``
(INT64) or ``scores`` (FP32).  JSON and binary tensor data are accepted and answered.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from fencebox.service import dataplane, v2codec
from fencebox.service.common import (
    ERROR_RESPONSES,
    authenticate,
    identity_of,
    read_within,
    runtime_of,
    server_timing,
)
from fencebox.service.errors import BadRequest, Overloaded, retry_after
from fencebox.service.policy import v2_output_signature, v2_outputs
from fencebox.service.runtime import Route

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"], dependencies=[Depends(authenticate)])
"""The per-model V2 endpoints; all require the API key (health and server metadata are in routes_ops)."""

INPUT_NAME = "input"

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


def _input_signature(route: Route) -> dict[str, Any]:
    h, w, c = route.backend.input_shape
    return {"name": INPUT_NAME, "datatype": "UINT8", "shape": [-1, h, w, c]}


@router.get("/models/{name}", summary="Model metadata", responses=ERROR_RESPONSES)
async def model_metadata(name: str, request: Request) -> dict[str, Any]:
    """The V2 signature of the route: its input and the outputs its policy exposes."""
    rt = runtime_of(request)
    route = rt.route(name)
    classes = len(route.backend.class_names) or 1
    return {
        "name": route.name,
        "versions": ["1"],
        "platform": "fencebox",
        "inputs": [_input_signature(route)],
        "outputs": v2_output_signature(route.config.policy, route.config.topk, classes),
        "parameters": {"chain": str(route.chain), "class_names": route.backend.class_names},
    }


@router.get("/models/{name}/ready", summary="Model readiness", responses=ERROR_RESPONSES)
async def model_ready(name: str, request: Request) -> JSONResponse:
    """200 when the route's backend can answer, else 503."""
    rt = runtime_of(request)
    route = rt.route(name)
    if not await route.backend.ready():
        raise Overloaded(f"model '{name}' is not ready ({route.backend.describe()})", headers=retry_after(1))
    return JSONResponse({"name": name, "ready": True})


def _binary_choice(msg: v2codec.Message, names: list[str]) -> tuple[list[str], set[str]]:
    """Which outputs to send, and which of them as binary data, per the request."""
    default_binary = bool(msg.parameters.get("binary_data_output", False))
    if not msg.outputs:
        return names, set(names) if default_binary else set()
    chosen, binary = [], set()
    for o in msg.outputs:
        if not isinstance(o, dict) or not isinstance(o.get("name"), str):
            raise BadRequest("each requested output must be an object with a 'name'")
        if o["name"] not in names:
            raise BadRequest(f"output {o['name']!r} is not available; this model's outputs are {names}")
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
            policy, k = route.config.policy, route.config.topk
            classes = len(route.backend.class_names) or 1
            names = [o["name"] for o in v2_output_signature(policy, k, classes)]
            chosen, binary = _binary_choice(msg, names)
            out = await dataplane.infer(rt, ctx, batch)
        finally:
            server_timing(request, ctx)
    tensors = [t for t in v2_outputs(out, route.backend.outputs, policy, k) if t.name in chosen]
    tensors.sort(key=lambda t: chosen.index(t.name))
    head: dict[str, Any] = {"model_name": route.name, "model_version": "1"}
    if msg.id is not None:
        head["id"] = msg.id
    payload, headers = v2codec.encode(tensors, binary, head, key="outputs")
    return Response(payload, headers=headers, media_type=headers["content-type"])
