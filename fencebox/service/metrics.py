"""Prometheus metrics and the ASGI middleware that counts requests and writes ``Server-Timing``.

Each app gets its own registry, so several apps (tests, benchmarks) can live in one process.
Handlers record stage durations with :func:`record_stage`; the middleware turns them into the
``Server-Timing`` header (``decode;dur=0.41, chain;dur=0.90, model;dur=1.2, total;dur=3.1``).
"""

from __future__ import annotations

import time
from collections.abc import MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_LATENCY_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_TIMING_KEY = "fencebox.timing"


class Metrics:
    """The service's Prometheus collectors, registered in a private registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "fencebox_requests",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=r,
        )
        self.errors = Counter(
            "fencebox_errors", "Error answers by endpoint and class", ["endpoint", "error"], registry=r
        )
        self.latency = Histogram(
            "fencebox_request_seconds",
            "Request latency by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.stage = Histogram(
            "fencebox_stage_seconds",
            "Time per stage (decode, chain, queue, model, encode) by route",
            ["route", "stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "fencebox_batch_size",
            "Images per model call",
            ["route"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=r,
        )
        self.queue_depth = Gauge(
            "fencebox_queue_depth", "Images waiting for the model", ["route"], registry=r
        )
        self.upstream_errors = Counter(
            "fencebox_upstream_errors", "Upstream failures by route and kind", ["route", "kind"], registry=r
        )
        self.in_flight = Gauge(
            "fencebox_in_flight", "Requests admitted and not yet answered", ["route"], registry=r
        )
        self.refusal = Histogram(
            "fencebox_refusal_seconds",
            "Server-side time to answer a refusal (429 budget, 503 overload) by status",
            ["status"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.rejected = Counter(
            "fencebox_rejected",
            "Requests refused before the model (auth, budget, queue)",
            ["reason"],
            registry=r,
        )
        self.budget_store_failures = Counter(
            "fencebox_budget_store_failures",
            "Budget charges that could not reach the shared store (Redis), by the mode that answered "
            "them: closed (refused, 503) or open (charged on this replica's own bucket)",
            ["mode"],
            registry=r,
        )


def record_stage(scope: MutableMapping[str, Any], stage: str, seconds: float) -> None:
    """Add ``seconds`` to ``stage`` for this request's Server-Timing header."""
    timings = scope.setdefault(_TIMING_KEY, {})
    timings[stage] = timings.get(stage, 0.0) + seconds


ENDPOINT_KEY = "fencebox.endpoint"
"""Scope key naming the endpoint of a request answered before routing (the admission gate)."""


def _endpoint(scope: Scope) -> str:
    if ENDPOINT_KEY in scope:
        return str(scope[ENDPOINT_KEY])
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


class TimingMiddleware:
    """Pure ASGI middleware: request counts, latency, error classes and the Server-Timing header."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request, add Server-Timing to the response start, and count the outcome."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        error_code: list[str] = []

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                timings: dict[str, float] = scope.get(_TIMING_KEY, {})
                total = (time.perf_counter() - start) * 1000.0
                parts = [f"{k};dur={v * 1000.0:.3f}" for k, v in timings.items()]
                parts.append(f"total;dur={total:.3f}")
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", ", ".join(parts).encode("latin-1")))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            error_code.append("internal")
            raise
        finally:
            endpoint = _endpoint(scope)
            elapsed = time.perf_counter() - start
            m = self.metrics
            m.requests.labels(endpoint, scope.get("method", ""), str(status)).inc()
            m.latency.labels(endpoint).observe(elapsed)
            if status in (429, 503):
                m.refusal.labels(str(status)).observe(elapsed)
            if status >= 400:
                m.errors.labels(
                    endpoint, scope.get("fencebox.error", error_code[0] if error_code else str(status))
                ).inc()
