"""Open Inference Protocol v2 (KServe) endpoints, so standard clients (tritonclient.http) work unchanged.

Each route is a V2 model with one input ``input``: UINT8 ``[-1, H, W, C]`` (or FP32 of the same
shape with values in [0, 1]), and the outputs its policy allows: ``label`` (INT64), plus ``topk``
(INT64) or ``scores`` (FP32).  JSON and binary tensor data are accepted and answered.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

import fencebox
from fencebox.service import v2codec
from fencebox.service.bodies import read_body
from fencebox.service.common import ERROR_RESPONSES, runtime_of, with_deadline
from fencebox.service.errors import BadRequest, Overloaded, retry_after
from fencebox.service.metrics import record_stage
from fencebox.service.policy import v2_output_signature, v2_outputs
from fencebox.service.runtime import Route, is_identity

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])

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


def _expected(route: Route) -> str:
    h, w, c = route.backend.input_shape
    return f"expected one input '{INPUT_NAME}', datatype UINT8 (or FP32 in [0, 1]), shape [-1, {h}, {w}, {c}] (NHWC)"


@router.get("", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    """Name, version and protocol extensions of this server."""
    return {"name": "fencebox", "version": fencebox.__version__, "extensions": ["binary_tensor_data"]}


@router.get("/health/live", summary="Liveness")
async def live() -> dict[str, bool]:
    """The process answers."""
    return {"live": True}


@router.get("/health/ready", summary="Readiness", responses={503: {"description": "a backend is not ready"}})
async def ready(request: Request) -> JSONResponse:
    """Ready when every route's backend is ready (upstreams are asked, cached for a second)."""
    rt = runtime_of(request)
    down = [name for name, r in rt.routes.items() if not await r.backend.ready()]
    if not rt.started or down:
        msg = "starting" if not rt.started else f"not ready: {', '.join(down)}"
        return JSONResponse({"error": msg, "code": "not_ready", "ready": False}, status_code=503)
    return JSONResponse({"ready": True})


@router.get("/models/{name}", summary="Model metadata", responses=ERROR_RESPONSES)
async def model_metadata(name: str, request: Request) -> dict[str, Any]:
    """The V2 signature of the route: its input and the outputs its policy exposes."""
    rt = runtime_of(request)
    rt.guard.identify(request)
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
    rt.guard.identify(request)
    route = rt.route(name)
    if not await route.backend.ready():
        raise Overloaded(f"model '{name}' is not ready ({route.backend.describe()})", headers=retry_after(1))
    return JSONResponse({"name": name, "ready": True})


def _to_batch(route: Route, msg: v2codec.Message) -> np.ndarray:
    if len(msg.tensors) != 1 or msg.tensors[0].name != INPUT_NAME:
        names = [t.name for t in msg.tensors]
        raise BadRequest(f"got inputs {names}; {_expected(route)}")
    t = msg.tensors[0]
    h, w, c = route.backend.input_shape
    if len(t.shape) != 4 or tuple(t.shape[1:]) != (h, w, c) or t.shape[0] < 1:
        raise BadRequest(f"input '{INPUT_NAME}' has shape {t.shape}; {_expected(route)}")
    if t.shape[0] > route.config.limits.max_images:
        raise BadRequest(
            f"{t.shape[0]} images in one request; this route accepts at most {route.config.limits.max_images}; {_expected(route)}"
        )
    if t.datatype == "UINT8":
        return np.array(t.data, dtype=np.uint8, order="C", copy=True)  # writable: torch refuses read-only
    if t.datatype == "FP32":
        x = t.data.astype(np.float32, copy=False)
        if not np.all(np.isfinite(x)) or float(x.min()) < 0.0 or float(x.max()) > 1.0:
            raise BadRequest(
                f"FP32 input '{INPUT_NAME}' must hold finite values in [0, 1]; {_expected(route)}"
            )
        return np.ascontiguousarray(np.rint(x * 255.0).astype(np.uint8))
    raise BadRequest(f"input '{INPUT_NAME}' has datatype {t.datatype}; {_expected(route)}")


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
    """Purify the input tensor's images with the route's chain and classify them."""
    rt = runtime_of(request)
    who = rt.guard.identify(request)
    route = rt.route(name)
    body = await read_body(request, route.config.limits.max_body_bytes)
    try:
        msg = v2codec.decode(body, request.headers.get(v2codec.HEADER_LENGTH), key="inputs")
    except v2codec.V2FormatError as exc:
        raise BadRequest(f"{exc}; {_expected(route)}") from None
    batch = _to_batch(route, msg)
    rt.guard.charge(who, float(batch.shape[0]))
    policy, k = route.config.policy, route.config.topk
    classes = len(route.backend.class_names) or 1
    names = [o["name"] for o in v2_output_signature(policy, k, classes)]
    chosen, binary = _binary_choice(msg, names)

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
    for stage, sec in (("chain", t_chain), ("queue", t_queue), ("model", t_model)):
        record_stage(request.scope, stage, sec)
        if stage != "model":
            rt.metrics.stage.labels(route.name, stage).observe(sec)
    tensors = [t for t in v2_outputs(out, route.backend.outputs, policy, k) if t.name in chosen]
    tensors.sort(key=lambda t: chosen.index(t.name))
    head: dict[str, Any] = {"model_name": route.name, "model_version": "1"}
    if msg.id is not None:
        head["id"] = msg.id
    payload, headers = v2codec.encode(tensors, binary, head, key="outputs")
    return Response(payload, headers=headers, media_type=headers["content-type"])
