"""The live state of the service: per-route chain, backend, batcher and admission, the pools, metrics, guard.

Work is split over pools so that one kind cannot starve another: decoding and chains run in the
``decode`` thread pool, local models in their own ``model`` pool, and large V2 bodies are parsed
in worker processes (a 13 MB JSON parse holds the GIL for ~100 ms even in a thread).  Every piece
of work goes through :meth:`Runtime.stage`, the one place that times stages (for Server-Timing and
the stage histogram), drops work whose request is past its deadline before it starts, and runs it
inside the request's :func:`~fencebox.transforms.cancel.cancel_scope`, so a 504 stops the chain.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from fencebox import image
from fencebox.errors import Cancelled, ConfigError, InputError, SpecError
from fencebox.service import v2codec
from fencebox.service.backends import Backend, LocalBackend, make_backend
from fencebox.service.batching import MicroBatcher
from fencebox.service.errors import (
    Forbidden,
    GatewayTimeout,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    retry_after,
)
from fencebox.service.metrics import Metrics
from fencebox.service.security import Guard
from fencebox.service.settings import RouteConfig, Settings
from fencebox.spec import load_chain
from fencebox.transforms.base import Transform
from fencebox.transforms.cancel import CancelToken, cancel_scope

T = TypeVar("T")
log = logging.getLogger("fencebox.service")

PROCESS_PARSE_BYTES = 1 << 20
"""V2 bodies at least this large are parsed in a worker process (when ``parse_processes`` > 0)."""

INLINE_PARSE_BYTES = 16 << 10
"""V2 bodies at most this large are parsed on the event loop: tens of microseconds, less than the
thread hop a pool would cost (a one-image 28x28 request is ~1 KB)."""


def is_identity(chain: Transform) -> bool:
    """Whether ``chain`` is the empty chain (``none``), which leaves images untouched."""
    from fencebox.chain import Chain

    return isinstance(chain, Chain) and len(chain) == 0


@dataclass
class RequestContext:
    """One request's deadline, cancellation token and stage timings (protocol-neutral)."""

    route: Route
    deadline: float
    token: CancelToken
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls, route: Route) -> RequestContext:
        """A context whose deadline is the route's ``limits.timeout_s`` from now."""
        deadline = time.monotonic() + route.config.limits.timeout_s
        return cls(route, deadline, CancelToken(deadline))


class Admission:
    """A per-route limit on requests in flight, checked at the door (before the body is read)."""

    def __init__(self, route: str, limit: int, metrics: Metrics) -> None:
        self.route = route
        self.limit = limit
        self.in_flight = 0
        self._metrics = metrics

    @property
    def full(self) -> bool:
        """Whether every slot is taken (the next request would be refused)."""
        return self.in_flight >= self.limit

    def overloaded(self) -> Overloaded:
        """The refusal of a request that found the route full (counted in ``fencebox_rejected``)."""
        self._metrics.rejected.labels("in_flight").inc()
        return Overloaded(
            f"route '{self.route}' is at its limit of {self.limit} requests in flight; retry shortly",
            headers=retry_after(1),
        )

    def enter(self) -> None:
        """Admit one request or raise Overloaded (503 + Retry-After) at once."""
        if self.full:
            raise self.overloaded()
        self.in_flight += 1

    def leave(self) -> None:
        """Release the slot of a finished request."""
        self.in_flight -= 1


class Route:
    """One model route at run time."""

    def __init__(self, config: RouteConfig, chain: Transform, backend: Backend, runtime: Runtime) -> None:
        self.config = config
        self.name = config.name
        self.chain = chain
        self.backend = backend
        self.runtime = runtime
        lim = config.limits
        self.limits = image.ImageLimits(
            max_bytes=lim.max_body_bytes,
            max_pixels=lim.max_pixels,
            max_side=lim.max_side,
            animated=lim.animated,
            max_frames=lim.max_frames,
        )
        h, w, c = backend.input_shape
        self.expect = v2codec.Expect(
            name="input",
            shape=(-1, h, w, c),
            datatypes=("UINT8", "FP32"),
            max_batch=lim.max_images,
            describe=f"expected one input 'input', datatype UINT8 (or FP32 in [0, 1]), shape [-1, {h}, {w}, {c}] (NHWC)",
        )
        self.max_v2_body_bytes = lim.max_v2_body_bytes or self.expect.max_bytes()
        b = config.batching
        self.batcher = MicroBatcher(
            config.name,
            self._model_call,
            b.max_batch,
            b.max_delay_ms,
            b.max_queue,
            b.workers,
            runtime.metrics,
        )
        self.admission = Admission(config.name, lim.max_in_flight, runtime.metrics)
        self._overrides: OrderedDict[str, Transform] = OrderedDict()

    async def _model_call(self, batch: np.ndarray) -> np.ndarray:
        return await self.backend.infer(batch)

    def chain_for(self, override: str | None) -> Transform:
        """The route's chain, or the client's override when the route allows it (parsed once, cached)."""
        if override is None:
            return self.chain
        if not self.config.allow_chain_override:
            raise Forbidden(
                f"route '{self.name}' does not allow overriding its chain (allow_chain_override: false)"
            )
        cached = self._overrides.get(override)
        if cached is not None:
            self._overrides.move_to_end(override)
            return cached
        if override.strip().lower().endswith((".yaml", ".yml", ".json")):
            raise SpecError("a chain override must be a spec or preset name, not a file path")
        t = load_chain(override)
        self._overrides[override] = t
        if len(self._overrides) > 64:
            self._overrides.popitem(last=False)
        return t

    def image_limits(self, chain: Transform) -> image.ImageLimits:
        """The decode limits for ``chain``: the route's, with the chain's smallest accepted side.

        /v1/purify and /v1/predict share it, so both accept the same smallest image.
        """
        if chain.min_size <= 1:
            return self.limits
        return replace(self.limits, min_side=chain.min_size)

    def check_cost(self, chain: Transform, shape: tuple[int, int, int, int]) -> None:
        """Refuse (413, naming the limit) a chain whose declared cost or output exceeds the route's limits.

        Runs before the chain: ``Transform.cost`` is an upper bound in pixel-operations and
        ``output_shape`` propagates the size, so an override cannot buy unbounded work.
        """
        lim = self.config.limits
        try:
            out = chain.output_shape(shape)
            cost = chain.cost(shape)
        except (ValueError, OverflowError) as exc:
            raise PayloadTooLarge(f"chain {chain} cannot be costed on {list(shape)}: {exc}") from None
        n = max(1, int(shape[0]))
        if out[1] * out[2] > lim.max_output_pixels:
            raise PayloadTooLarge(
                f"chain {chain} would produce {out[2]}x{out[1]} = {out[1] * out[2]} pixels per image; this "
                f"route's max_output_pixels is {lim.max_output_pixels}"
            )
        if cost / n > lim.max_chain_cost:
            raise PayloadTooLarge(
                f"chain {chain} costs {cost / n:.3g} pixel-operations per image on {shape[2]}x{shape[1]}; "
                f"this route's max_chain_cost is {lim.max_chain_cost:.3g}"
            )

    def _fit(self, batch: np.ndarray) -> np.ndarray:
        h, w, _ = self.backend.input_shape
        if batch.shape[1:3] == (h, w):
            return batch
        return np.stack([image.resize_to(im, h, w) for im in batch])

    def decode_for_model(self, data: bytes, chain: Transform) -> np.ndarray:
        """Decode no more than the model needs and normalise to its input: (1, H, W, C) uint8.

        The chain's cost is checked here, before it runs.
        """
        h, w, c = self.backend.input_shape
        img = image.decode(
            data, self.image_limits(chain), channels=c, background=self.config.background, target=(h, w)
        )
        if img.shape[:2] != (h, w):
            if not self.config.resize:
                raise InputError(
                    f"route '{self.name}' expects {w}x{h} images (width x height), got {img.shape[1]}x{img.shape[0]}"
                )
            img = image.resize_to(img, h, w)
        self.check_cost(chain, (1, h, w, c))
        return img[None]

    def decode_full(self, data: bytes, chain: Transform) -> np.ndarray:
        """Decode keeping the size (for /v1/purify): (1, H, W, C) uint8, the chain's cost checked."""
        img = image.decode(data, self.image_limits(chain), channels=None, background=self.config.background)
        hh, ww, cc = img.shape
        self.check_cost(chain, (1, hh, ww, cc))
        return img[None]

    def prepare(self, data: bytes, chain: Transform) -> tuple[np.ndarray, float, float]:
        """Decode for the model and run ``chain`` in the calling thread: (batch, decode s, chain s).

        For callers outside the data plane (the UI's stages view); requests go through
        :mod:`fencebox.service.dataplane`, which times stages itself.
        """
        t0 = time.perf_counter()
        batch = self.decode_for_model(data, chain)
        t1 = time.perf_counter()
        out = self.purify_batch(batch, chain)
        return out, t1 - t0, time.perf_counter() - t1

    def run_chain(self, batch: np.ndarray, chain: Transform) -> np.ndarray:
        """Run the chain on a decoded batch (the identity chain is free)."""
        return batch if is_identity(chain) else chain.run(batch, None)

    def purify_batch(self, batch: np.ndarray, chain: Transform) -> np.ndarray:
        """Run the chain on an already-decoded batch and fit it to the model's input."""
        return self._fit(self.run_chain(batch, chain))


def _in_scope(token: CancelToken, fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn`` in a worker under ``token``: dropped unstarted when the request is already past it."""
    if token.cancelled:
        raise Cancelled("the request's deadline passed before its work started; the work was dropped")
    with cancel_scope(token):
        return fn(*args)


class Runtime:
    """All routes plus the pools, metrics and guard; built and torn down by the app's lifespan."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.pool = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="fencebox-decode")
        self.model_pool = ThreadPoolExecutor(
            max_workers=settings.model_threads, thread_name_prefix="fencebox-model"
        )
        self._procs: ProcessPoolExecutor | None = None
        self.guard = Guard(
            [k.get_secret_value() for k in settings.api_keys],
            settings.rate_limit,
            lambda reason: self.metrics.rejected.labels(reason).inc(),
            on_store_failure=lambda mode: self.metrics.budget_store_failures.labels(mode).inc(),
        )
        self.routes: dict[str, Route] = {}
        self.started = False
        self._torch_threads: int | None = None
        self._switch_interval: float | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking function in the decode pool (no request context: start-up work)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def stage(
        self,
        ctx: RequestContext,
        name: str,
        fn: Callable[..., T],
        *args: Any,
        pool: Executor | None = None,
        inline: bool = False,
    ) -> T:
        """Run one stage of a request's work off the loop, timed, under its deadline and cancel token.

        The one place stages are timed: ``ctx.timings`` (the Server-Timing header) and the
        ``fencebox_stage_seconds`` histogram.  Work is dropped unstarted when the request is past
        its deadline; if the request is cancelled meanwhile, the token stops cooperative transforms.
        ``inline`` runs ``fn`` on the loop instead, for work bounded to less than a thread hop costs.
        """
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        try:
            if inline:
                return _in_scope(ctx.token, fn, *args)
            if pool is not None and isinstance(pool, ProcessPoolExecutor):
                try:
                    return await loop.run_in_executor(pool, fn, *args)
                except BrokenProcessPool:  # a worker died (e.g. killed for memory): new ones next time
                    if self._procs is pool:
                        self._procs = None
                    log.warning("a parse worker process died; parsing this body in a thread")
            threads = self.pool if pool is None or isinstance(pool, ProcessPoolExecutor) else pool
            return await loop.run_in_executor(
                threads,
                _in_scope,
                ctx.token,
                fn,
                *args,
            )
        finally:
            self.record(ctx, name, time.perf_counter() - started)

    def record(self, ctx: RequestContext, name: str, seconds: float) -> None:
        """Add a stage duration to the request's timings and the stage histogram."""
        ctx.timings[name] = ctx.timings.get(name, 0.0) + seconds
        if name != "model":  # the batcher records model time once per batch
            self.metrics.stage.labels(ctx.route.name, name).observe(seconds)

    async def within_deadline(self, ctx: RequestContext, work: Any) -> Any:
        """Await ``work`` until the request's deadline; past it, cancel the token and answer 504."""
        try:
            async with asyncio.timeout_at(self._loop_time(ctx.deadline)):
                return await work
        except TimeoutError:
            ctx.token.cancel()
            limit = ctx.route.config.limits.timeout_s
            raise GatewayTimeout(f"route '{ctx.route.name}' did not answer within {limit:g} s") from None
        except BaseException:
            ctx.token.cancel()  # an abandoned request (client gone, error): stop its remaining work
            raise

    @staticmethod
    def _loop_time(deadline: float) -> float:
        loop = asyncio.get_running_loop()
        return loop.time() + (deadline - time.monotonic())

    def parse_pool(self, size: int) -> Executor | None:
        """The process pool for a V2 body of ``size`` bytes, or None to parse it in a thread."""
        if self.settings.parse_processes <= 0 or size < PROCESS_PARSE_BYTES:
            return None
        if self._procs is None:
            self._procs = ProcessPoolExecutor(
                max_workers=self.settings.parse_processes, mp_context=multiprocessing.get_context("spawn")
            )
        return self._procs

    async def start(self) -> None:
        """Load every route's chain and model, check the chain fits the model, start batchers."""
        if self.settings.gil_switch_ms is not None:
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(self.settings.gil_switch_ms / 1000.0)
        if self.settings.torch_threads is not None:
            # Parallelism comes from the worker pools and batching; intra-op threads on top of it
            # oversubscribe the cores (a single small image took 50 ms instead of 0.05 ms under load).
            import torch

            self._torch_threads = torch.get_num_threads()
            torch.set_num_threads(self.settings.torch_threads)
        for cfg in self.settings.routes:
            try:
                chain = load_chain(cfg.chain)
            except SpecError as exc:
                raise ConfigError(f"route '{cfg.name}': {exc}") from None
            backend = await self.run(make_backend, cfg.name, cfg.backend, self.model_pool, self.metrics)
            h, w, c = backend.input_shape
            try:
                await self.run(chain.run, np.zeros((1, h, w, c), np.uint8), 0)
            except Exception as exc:
                raise ConfigError(
                    f"route '{cfg.name}': chain {chain} cannot run on {h}x{w}x{c} images: {exc}"
                ) from None
            await backend.start()
            if isinstance(backend, LocalBackend):  # warm up: the first torch call is slow
                await backend.infer(np.zeros((1, h, w, c), np.uint8))
            route = Route(cfg, chain, backend, self)
            route.batcher.start()
            self.routes[cfg.name] = route
        biggest = max(r.max_v2_body_bytes for r in self.routes.values())
        procs = self.parse_pool(biggest)
        if procs is not None:  # start the parse workers now, not on the first large body
            loop = asyncio.get_running_loop()
            await asyncio.gather(
                *(
                    loop.run_in_executor(procs, v2codec.worker_ready)
                    for _ in range(self.settings.parse_processes)
                )
            )
        self.started = True

    async def close(self) -> None:
        """Stop batchers, close backends, shut the pools down."""
        for route in self.routes.values():
            await route.batcher.close()
            await route.backend.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.model_pool.shutdown(wait=False, cancel_futures=True)
        if self._procs is not None:
            self._procs.shutdown(wait=False, cancel_futures=True)
            self._procs = None
        self.guard.close()
        self.started = False
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None
        if self._torch_threads is not None:
            import torch

            torch.set_num_threads(self._torch_threads)
            self._torch_threads = None

    def route(self, name: str | None) -> Route:
        """The named route (or the default one); NotFound lists the routes there are."""
        if name is None:
            name = self.settings.default.name
        r = self.routes.get(name)
        if r is None:
            raise NotFound(f"no model route named {name!r}; routes: {', '.join(self.routes) or 'none'}")
        return r
