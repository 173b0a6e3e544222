"""An upstream model server spoken to over the gRPC Open Inference Protocol (KServe with
``enable_grpc``, Triton, MLServer): one ``grpc.aio`` channel per route (HTTP/2 multiplexes the
calls in flight), tensors sent and read as raw contents.

Failures map like the HTTP upstream's: past ``timeout_s`` (``DEADLINE_EXCEEDED``) -> 504,
unreachable (``UNAVAILABLE``) -> 502 and a fresh channel for the next call (so a restarted
upstream is used at once instead of after gRPC's reconnect back-off), any other status or an
unusable answer -> 502; each is counted in ``fencebox_upstream_errors_total``.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import grpc
import numpy as np
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from fencebox.service import v2codec
from fencebox.service.backends import UpstreamAnswers
from fencebox.service.errors import GatewayTimeout, UpstreamError
from fencebox.service.metrics import Metrics
from fencebox.service.settings import BackendConfig

_MAX_MESSAGE = 64 * 1024 * 1024
"""Largest message sent or accepted on the upstream channel (a batch of images or of scores)."""

_TYPED = {"FP32": "fp32_contents", "FP64": "fp64_contents"}
"""Typed-contents fields an upstream may answer scores in instead of raw contents."""

log = logging.getLogger("fencebox.service")


def output_tensor(response: Any, name: str | None) -> v2codec.Tensor:
    """The named (default: first) output of a ``ModelInferResponse``; V2FormatError if there is none usable."""
    outputs = list(response.outputs)
    if not outputs:
        raise v2codec.V2FormatError("the answer has no outputs")
    index = 0
    if name:
        names = [o.name for o in outputs]
        if name not in names:
            raise v2codec.V2FormatError(f"no output named {name!r} (got {names})")
        index = names.index(name)
    out = outputs[index]
    dtype = v2codec.DTYPES.get(out.datatype)
    if dtype is None or dtype.kind != "f":
        raise v2codec.V2FormatError(f"output '{out.name}' has datatype {out.datatype!r}, expected FP16/32/64")
    shape = [int(d) for d in out.shape]
    if any(d < 0 for d in shape):
        raise v2codec.V2FormatError(f"output '{out.name}' has shape {shape}")
    if response.raw_output_contents:
        if len(response.raw_output_contents) != len(outputs):
            raise v2codec.V2FormatError("raw_output_contents does not hold one entry per output")
        raw = response.raw_output_contents[index]
        if len(raw) != int(np.prod(shape)) * dtype.itemsize:
            raise v2codec.V2FormatError(f"output '{out.name}' holds {len(raw)} bytes, not shape {shape}")
        data = np.frombuffer(raw, dtype=dtype)
    elif out.datatype in _TYPED:
        data = np.asarray(getattr(out.contents, _TYPED[out.datatype]), dtype=dtype)
        if data.size != int(np.prod(shape)):
            raise v2codec.V2FormatError(f"output '{out.name}' holds {data.size} values, not shape {shape}")
    else:
        raise v2codec.V2FormatError(f"output '{out.name}' has no data")
    return v2codec.Tensor(out.name, out.datatype, shape, data.reshape(shape))


class GrpcUpstreamBackend(UpstreamAnswers):
    """A V2 model behind a gRPC Open Inference Protocol server."""

    def __init__(self, route: str, config: BackendConfig, metrics: Metrics) -> None:
        assert config.url is not None and config.input_shape is not None
        self.route = route
        self.config = config
        self.metrics = metrics
        self.model = config.upstream_model or route
        self.input_shape = config.input_shape
        self.class_names = list(config.class_names or [])
        self.outputs = config.outputs
        self.target = config.url.removeprefix("grpc://").rstrip("/")
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._ready_at = 0.0
        self._ready = False

    def _get_stub(self) -> Any:
        if self._stub is None:
            self._channel = grpc.aio.insecure_channel(
                self.target,
                options=[
                    ("grpc.max_send_message_length", _MAX_MESSAGE),
                    ("grpc.max_receive_message_length", _MAX_MESSAGE),
                    ("grpc.enable_retries", 0),  # a failure is reported, not silently repeated
                    # our own subchannels: a fresh channel must not inherit the reconnect back-off of
                    # the global pool's subchannel to the same address after the upstream went down
                    ("grpc.use_local_subchannel_pool", 1),
                ],
            )
            self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        return self._stub

    async def _reset(self) -> None:
        """Drop the channel; the next call opens a new one."""
        channel, self._channel, self._stub = self._channel, None, None
        if channel is not None:
            await channel.close(grace=None)

    async def start(self) -> None:
        """Create the channel (it connects on first use)."""
        self._get_stub()

    async def close(self) -> None:
        """Close the channel."""
        await self._reset()

    async def ready(self) -> bool:
        """Ask the upstream's ModelReady (cached for one second)."""
        now = time.monotonic()
        if now - self._ready_at < 1.0:
            return self._ready
        try:
            answer = await self._get_stub().ModelReady(pb.ModelReadyRequest(name=self.model), timeout=2.0)
            self._ready = bool(answer.ready)
        except grpc.aio.AioRpcError as exc:
            self._ready = False
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                await self._reset()
        self._ready_at = now
        return self._ready

    def _where(self) -> str:
        """Where the upstream is, for the log."""
        return f"upstream grpc {self.target}"

    def _request(self, batch: np.ndarray) -> Any:
        c = self.config
        x: np.ndarray = batch
        if c.layout == "NCHW":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if c.datatype == "FP32":
            x = x.astype(np.float32) * np.float32(1.0 / 255.0)
        request = pb.ModelInferRequest(model_name=self.model)
        request.inputs.add(name=c.input_name, datatype=c.datatype, shape=list(x.shape))
        request.raw_input_contents.append(np.ascontiguousarray(x, dtype=v2codec.DTYPES[c.datatype]).tobytes())
        if c.output_name:
            request.outputs.add(name=c.output_name)
        return request

    async def infer(self, batch: np.ndarray) -> np.ndarray:
        """Send the batch as one ModelInfer call; map failures to 502/504."""
        request = self._request(batch)
        try:
            response = await self._get_stub().ModelInfer(request, timeout=self.config.timeout_s)
        except grpc.aio.AioRpcError as exc:
            code, details = exc.code(), (exc.details() or "")[:300]
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise self._fail(
                    "timeout",
                    GatewayTimeout(
                        f"the upstream model server did not answer within {self.config.timeout_s:g} s (gRPC)"
                    ),
                ) from None
            if code == grpc.StatusCode.UNAVAILABLE:
                await self._reset()
                log.warning("route %s: upstream grpc %s unavailable: %s", self.route, self.target, details)
                raise self._fail(
                    "down", UpstreamError("the upstream model server is unreachable (gRPC UNAVAILABLE)")
                ) from None
            raise self._fail(
                "bad_status", UpstreamError(f"the upstream model server answered gRPC {code.name}: {details}")
            ) from None
        return self._scores(lambda: output_tensor(response, self.config.output_name), batch.shape[0])

    def describe(self) -> str:
        """The upstream target and model."""
        return f"upstream grpc {self.target} model {self.model}"
