"""Where a route's model runs: a local :class:`~fencebox.models.base.Classifier` or an upstream V2 server.

Both take a purified uint8 ``(N, H, W, C)`` batch and return float32 ``(N, classes)`` scores
(logits, or probabilities when the upstream says so).  The local backend runs the model in the
service's worker pool, never on the event loop.  The upstream backend keeps a pooled aiohttp client
with connect/read timeouts and maps failures to 502 (down, bad answer) and 504 (slow).
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import aiohttp
import numpy as np
import yarl

from fencebox.errors import ConfigError
from fencebox.models import load_model
from fencebox.models.base import Classifier
from fencebox.service import v2codec
from fencebox.service.errors import GatewayTimeout, UpstreamError
from fencebox.service.metrics import Metrics
from fencebox.service.settings import BackendConfig

log = logging.getLogger("fencebox.service")


class Backend(ABC):
    """A model behind a route."""

    input_shape: tuple[int, int, int]
    class_names: list[str]
    outputs: str = "logits"

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Open connections or warm up."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abstractmethod
    async def ready(self) -> bool:
        """Whether the model can answer now."""

    @abstractmethod
    async def infer(self, batch: np.ndarray) -> np.ndarray:
        """uint8 ``(N, H, W, C)`` -> float32 ``(N, classes)``."""

    def describe(self) -> str:
        """A short description for metadata endpoints."""
        return type(self).__name__


class LocalBackend(Backend):
    """A Classifier in this process, run in the worker pool."""

    def __init__(self, classifier: Classifier, pool: Executor, ref: str = "") -> None:
        self.classifier = classifier
        self.pool = pool
        self.ref = ref
        self.input_shape = tuple(classifier.input_shape)  # type: ignore[assignment]
        names = list(classifier.card.class_names)
        self.class_names = (
            names if len(names) == classifier.num_classes else [str(i) for i in range(classifier.num_classes)]
        )

    async def ready(self) -> bool:
        """A loaded local model is always ready."""
        return True

    async def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run ``predict_logits`` in the worker pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.classifier.predict_logits, batch)

    def describe(self) -> str:
        """The model reference."""
        return f"local {self.ref or self.classifier.card.name}"


class UpstreamAnswers(Backend):
    """What the HTTP and gRPC upstream backends share: failure accounting and the checks on an answer,
    kept in one place so both protocols count, log and refuse a bad answer the same way."""

    route: str
    model: str
    config: BackendConfig
    metrics: Metrics
    _ready: bool
    _ready_at: float

    @abstractmethod
    def _where(self) -> str:
        """Where the upstream is, for the log (never for the client)."""

    def _fail(self, kind: str, err: Exception) -> Exception:
        """Count and log a failure; the client's message says what happened, the log says where."""
        log.warning("route %s: %s (model %s): %s", self.route, self._where(), self.model, err)
        self.metrics.upstream_errors.labels(self.route, kind).inc()
        self._ready, self._ready_at = False, time.monotonic()
        return err

    def _scores(self, output: Callable[[], v2codec.Tensor], n: int) -> np.ndarray:
        """The float32 ``(n, classes)`` scores of the tensor ``output()`` reads from the answer; an unusable
        answer is a counted 502. A good answer marks the upstream ready and names the classes if unnamed."""
        try:
            out = check_scores(output(), n)
        except (v2codec.V2FormatError, StopIteration) as exc:
            what = str(exc) or f"no output named {self.config.output_name!r}"
            raise self._fail(
                "bad_answer", UpstreamError(f"the upstream model server gave an unusable answer: {what}")
            ) from None
        if not self.class_names or len(self.class_names) != out.shape[1]:
            self.class_names = [str(i) for i in range(out.shape[1])]
        self._ready, self._ready_at = True, time.monotonic()
        return out


class UpstreamBackend(UpstreamAnswers):
    """Any server speaking the Open Inference Protocol (KServe, Triton, MLServer) over pooled HTTP/1.1.

    The client is aiohttp's: on loopback it costs 0.7 ms of CPU per request against httpx's 1.8 ms
    (same pool size and timeouts; see benchmarks/bench_service.py), and the proxy's own CPU is what
    a lean proxy is judged by.
    """

    def __init__(self, route: str, config: BackendConfig, metrics: Metrics) -> None:
        assert config.url is not None and config.input_shape is not None
        self.route = route
        self.config = config
        self.metrics = metrics
        self.model = config.upstream_model or route
        self.input_shape = config.input_shape
        self.class_names = list(config.class_names or [])
        self.outputs = config.outputs
        self.base = config.url.rstrip("/")
        self._client: aiohttp.ClientSession | None = None
        self._infer_url = yarl.URL(f"{self.base}/v2/models/{self.model}/infer")
        self._ready_url = yarl.URL(f"{self.base}/v2/models/{self.model}/ready")
        self._timeout = aiohttp.ClientTimeout(total=config.timeout_s, connect=config.connect_timeout_s)
        self._ready_at = 0.0
        self._ready = False

    def _get_client(self) -> aiohttp.ClientSession:
        if self._client is None or self._client.closed:
            c = self.config
            self._client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=c.max_connections, limit_per_host=0),
                timeout=self._timeout,
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept-Encoding"),
            )
        return self._client

    async def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes, Mapping[str, str]]:
        """POST on the pooled session; (status, body, headers)."""
        async with self._get_client().post(self._infer_url, data=body, headers=headers) as response:
            return response.status, await response.read(), response.headers

    async def start(self) -> None:
        """Create the pooled client."""
        self._get_client()

    async def close(self) -> None:
        """Close pooled connections."""
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def ready(self) -> bool:
        """Ask the upstream's model-ready endpoint (cached for one second)."""
        now = time.monotonic()
        if now - self._ready_at < 1.0:
            return self._ready
        try:
            async with self._get_client().get(
                self._ready_url, timeout=aiohttp.ClientTimeout(total=2.0)
            ) as response:
                self._ready = response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            self._ready = False
        self._ready_at = now
        return self._ready

    def _where(self) -> str:
        """Where the upstream is, for the log."""
        return f"upstream {self.base}"

    def _request(self, batch: np.ndarray) -> tuple[bytes, dict[str, str]]:
        c = self.config
        x: np.ndarray = batch
        if c.layout == "NCHW":
            x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if c.datatype == "FP32":
            x = x.astype(np.float32) * np.float32(1.0 / 255.0)
        tensor = v2codec.Tensor(c.input_name, c.datatype, list(x.shape), x)
        head: dict[str, Any] = {"parameters": {"binary_data_output": True}}
        if c.output_name:
            head["outputs"] = [{"name": c.output_name, "parameters": {"binary_data": True}}]
        return v2codec.encode([tensor], True, head, key="inputs")

    async def infer(self, batch: np.ndarray) -> np.ndarray:
        """Send the batch as one V2 request with binary tensor data; map failures to 502/504."""
        body, headers = self._request(batch)
        try:
            status, content, resp_headers = await self._post(body, headers)
        except TimeoutError as exc:  # aiohttp's connect and read timeouts are TimeoutErrors too
            raise self._fail(
                "timeout",
                GatewayTimeout(
                    f"the upstream model server did not answer within {self.config.timeout_s:g} s ({type(exc).__name__})"
                ),
            ) from None
        except aiohttp.ClientError as exc:
            raise self._fail(
                "down", UpstreamError(f"the upstream model server is unreachable ({type(exc).__name__})")
            ) from None
        if status != 200:
            detail = content[:300].decode("utf-8", errors="replace")
            raise self._fail(
                "bad_status", UpstreamError(f"the upstream model server answered HTTP {status}: {detail}")
            )

        def output() -> v2codec.Tensor:
            msg = v2codec.decode(content, resp_headers.get(v2codec.HEADER_LENGTH), key="outputs")
            if self.config.output_name:
                return next(t for t in msg.tensors if t.name == self.config.output_name)
            return msg.tensors[0]

        return self._scores(output, batch.shape[0])

    def describe(self) -> str:
        """The upstream URL and model."""
        return f"upstream {self.base} model {self.model}"


def check_scores(tensor: v2codec.Tensor, n: int) -> np.ndarray:
    """An upstream's output tensor as float32 ``(n, classes)`` scores; V2FormatError if it is not one."""
    out = np.asarray(tensor.data, dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != n or out.shape[1] < 1:
        raise v2codec.V2FormatError(
            f"output '{tensor.name}' has shape {list(out.shape)}, expected [{n}, classes]"
        )
    if not np.isfinite(out).all():
        raise v2codec.V2FormatError(f"output '{tensor.name}' holds NaN or infinite values")
    return out


def make_backend(route: str, config: BackendConfig, pool: Executor, metrics: Metrics) -> Backend:
    """Build the backend a route's configuration names."""
    if config.kind == "upstream" and config.protocol == "grpc":
        try:  # grpcio is an optional extra: imported only when a route asks for it
            from fencebox.service.upstream_grpc import GrpcUpstreamBackend
        except ImportError as exc:
            raise ConfigError(
                f"route '{route}' uses a grpc upstream but gRPC support is not installed ({exc}): "
                "pip install 'fencebox[grpc]'"
            ) from None
        return GrpcUpstreamBackend(route, config, metrics)
    if config.kind == "upstream":
        return UpstreamBackend(route, config, metrics)
    return LocalBackend(load_model(config.model), pool, config.model)
