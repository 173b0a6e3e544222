"""The Open Inference Protocol over gRPC: the standard ``inference.GRPCInferenceService``.

Started by the app's lifespan when ``grpc_port`` is set, on the same event loop as the HTTP
server (``grpc.aio``), so both share the runtime: routes, batchers, worker pool, guard and metrics.
Inference goes through :mod:`fencebox.service.dataplane`, the same code as the REST endpoint, so
API keys (``authorization: Bearer <key>`` or ``x-api-key`` metadata), query budgets, limits and
output policy are identical.  The service's errors map to gRPC status codes: bad input
``INVALID_ARGUMENT``, no or a wrong key ``UNAUTHENTICATED``, spent budget ``RESOURCE_EXHAUSTED``
(with ``retry-after`` trailing metadata), unknown model ``NOT_FOUND``, upstream down or queue full
``UNAVAILABLE``, deadline ``DEADLINE_EXCEEDED``.

The message classes are the ones ``tritonclient[grpc]`` ships (``package inference``, wire
compatible with KServe's ``grpc_predict_v2.proto``); nothing is generated here.  Both define the
same protobuf symbols, so one process can import only one of them: fencebox uses tritonclient's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from fencebox.errors import ConfigError
from fencebox.service import dataplane
from fencebox.service.errors import BadRequest, PayloadTooLarge, ServiceError, classify
from fencebox.service.runtime import Route, Runtime
from fencebox.service.v2codec import DTYPES, Tensor

log = logging.getLogger("fencebox.service")

T = TypeVar("T")

_SERVICE = "inference.GRPCInferenceService"

STATUS_CODES: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
"""The gRPC status of each HTTP status the service's errors carry (anything else: INTERNAL)."""

_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}
"""Which typed ``InferTensorContents`` field holds each datatype (FP16: raw contents only)."""

_HEADER_ROOM = 1024 * 1024
"""Bytes allowed on top of a route's ``max_body_bytes`` for the message around the tensor data."""


def _peer_host(peer: str) -> str | None:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` -> the address without the port."""
    _, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0] if rest.count(":") >= 1 else rest
    return host.strip("[]") or None


def _typed_values(inp: Any, datatype: str, where: str) -> np.ndarray:
    """The tensor's typed contents as a flat array of its datatype, refusing values it cannot hold."""
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadRequest(f"{where}: datatype {datatype} must be sent in raw_input_contents")
    dtype = DTYPES[datatype]
    values = getattr(inp.contents, field)
    if dtype.kind in "iu":
        raw = np.asarray(values, dtype=np.uint64 if datatype == "UINT64" else np.int64)
        info = np.iinfo(dtype)
        if raw.size and (int(raw.min()) < info.min or int(raw.max()) > info.max):
            raise BadRequest(f"{where}: {datatype} values must lie in [{info.min}, {info.max}]")
        return raw.astype(dtype)
    return np.asarray(values, dtype=dtype)


def decode_inputs(request: Any, max_bytes: int) -> list[Tensor]:
    """A ``ModelInferRequest``'s inputs as tensors (raw or typed contents); BadRequest when malformed."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"raw_input_contents holds {len(raw)} entries for {len(request.inputs)} inputs; send one per input"
        )
    if not request.inputs:
        raise BadRequest("the request has no inputs")
    total = 0
    tensors = []
    for i, inp in enumerate(request.inputs):
        where = f"input '{inp.name}'"
        if inp.datatype not in DTYPES:
            raise BadRequest(
                f"{where}: datatype {inp.datatype!r} is not supported; use one of {', '.join(DTYPES)}"
            )
        shape = [int(d) for d in inp.shape]
        if any(d < 0 for d in shape):
            raise BadRequest(f"{where}: shape must not have negative dimensions, got {shape}")
        dtype = DTYPES[inp.datatype]
        count = math.prod(shape)
        total += count * dtype.itemsize
        if total > max_bytes:
            raise PayloadTooLarge(
                f"the inputs hold more than {max_bytes} bytes; this route accepts at most {max_bytes}"
            )
        if raw:
            if inp.HasField("contents"):
                raise BadRequest(
                    f"{where}: send the data either in raw_input_contents or in contents, not both"
                )
            if len(raw[i]) != count * dtype.itemsize:
                raise BadRequest(
                    f"{where}: raw_input_contents holds {len(raw[i])} bytes but shape {shape} of "
                    f"{inp.datatype} needs {count * dtype.itemsize}"
                )
            arr = np.frombuffer(raw[i], dtype=dtype)
        else:
            arr = _typed_values(inp, inp.datatype, where)
            if arr.size != count:
                raise BadRequest(f"{where}: contents hold {arr.size} values but shape {shape} needs {count}")
        tensors.append(Tensor(inp.name, inp.datatype, shape, arr.reshape(shape)))
    return tensors


def _tensor_metadata(sig: dict[str, Any]) -> Any:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=sig["name"], datatype=sig["datatype"], shape=sig["shape"]
    )


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """``inference.GRPCInferenceService`` over the service's runtime (the RPCs fencebox implements)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def _who(self, context: grpc.aio.ServicerContext) -> str:
        metadata: Mapping[str, str] = {
            k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)
        }
        return self.rt.guard.authenticate(self.rt.guard.presented_key(metadata), _peer_host(context.peer()))

    async def _serve(
        self, method: str, context: grpc.aio.ServicerContext, fn: Callable[[], Awaitable[T]]
    ) -> T:
        """Run ``fn``; count the call; turn every failure into its gRPC status with the error's message."""
        endpoint = f"grpc:/{_SERVICE}/{method}"
        metrics = self.rt.metrics
        start = time.perf_counter()
        status = "OK"
        try:
            return await fn()
        except asyncio.CancelledError:  # the client went away or its deadline passed
            status = "CANCELLED"
            raise
        except Exception as exc:
            err = classify(exc)
            if not isinstance(exc, ServiceError) and err.status >= 500:
                log.exception("unhandled error on gRPC %s", method)
            code = STATUS_CODES.get(err.status, grpc.StatusCode.INTERNAL)
            status = code.name
            metrics.errors.labels(endpoint, err.code).inc()
            trailing = tuple((k.lower(), v) for k, v in err.headers.items() if k.lower() == "retry-after")
            await context.abort(code, err.message, trailing_metadata=trailing)
            raise  # abort raises; this line only satisfies the type checker
        finally:
            metrics.requests.labels(endpoint, "grpc", status).inc()
            metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The process answers."""
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Ready when started and every route's backend is ready."""

        async def run() -> Any:
            ready = self.rt.started
            for route in self.rt.routes.values():
                ready = ready and await route.backend.ready()
            return pb.ServerReadyResponse(ready=ready)

        return await self._serve("ServerReady", context, run)

    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Whether the route's backend can answer now (NOT_FOUND for an unknown route)."""

        async def run() -> Any:
            self._who(context)
            route = self.rt.route(request.name)
            return pb.ModelReadyResponse(ready=await route.backend.ready())

        return await self._serve("ModelReady", context, run)

    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Name, version and protocol extensions."""
        meta = dataplane.server_metadata()
        return pb.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """The route's V2 signature: its input and the outputs its policy exposes."""

        async def run() -> Any:
            self._who(context)
            meta = dataplane.model_metadata(self.rt.route(request.name))
            return pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[_tensor_metadata(s) for s in meta["inputs"]],
                outputs=[_tensor_metadata(s) for s in meta["outputs"]],
            )

        return await self._serve("ModelMetadata", context, run)

    async def RepositoryIndex(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Every route with its state (only the ready ones when ``ready`` is set)."""

        async def run() -> Any:
            self._who(context)
            index = await dataplane.repository_index(self.rt, bool(request.ready))
            return pb.RepositoryIndexResponse(
                models=[pb.RepositoryIndexResponse.ModelIndex(**m) for m in index]
            )

        return await self._serve("RepositoryIndex", context, run)

    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        """Purify the input tensor's images with the route's chain and classify them (raw outputs)."""

        async def run() -> Any:
            who = self._who(context)
            route: Route = self.rt.route(request.model_name)
            inputs = decode_inputs(request, route.config.limits.max_body_bytes)
            requested = [o.name for o in request.outputs] or None
            result = await dataplane.infer(self.rt, route, who, inputs, requested)
            response = pb.ModelInferResponse(model_name=route.name, model_version="1", id=request.id)
            for t in result.tensors:
                response.outputs.add(name=t.name, datatype=t.datatype, shape=list(t.shape))
                response.raw_output_contents.append(
                    np.ascontiguousarray(t.data, dtype=DTYPES[t.datatype]).tobytes()
                )
            return response

        return await self._serve("ModelInfer", context, run)


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class GrpcServer:
    """A ``grpc.aio`` server for the runtime on ``host:port`` (port 0: any free one, see ``port``)."""

    def __init__(self, runtime: Runtime, host: str, port: int) -> None:
        self.runtime = runtime
        self.host = host
        self.port = port
        self.server: grpc.aio.Server | None = None

    async def start(self) -> int:
        """Bind and start serving on the running loop; return the bound port.  ConfigError when the
        address cannot be bound."""
        biggest = max((r.limits.max_body_bytes for r in self.runtime.settings.routes), default=0)
        limit = biggest + _HEADER_ROOM
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", limit),
                ("grpc.so_reuseport", 0),  # a port in use is an error, not a second listener
            ]
        )
        pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self.runtime), server)
        address = _address(self.host, self.port)
        try:
            bound = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise ConfigError(f"cannot serve gRPC on {address}: {exc}") from None
        if not bound:
            raise ConfigError(f"cannot serve gRPC on {address} (address in use?)")
        self.port = bound
        await server.start()
        self.server = server
        return bound

    async def stop(self, grace: float = 2.0) -> None:
        """Stop accepting calls; give calls in flight ``grace`` seconds to finish."""
        if self.server is not None:
            await self.server.stop(grace)
            self.server = None
