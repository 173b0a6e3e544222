"""The live state of the service: per-route chain, backend and batcher, the worker pool, metrics, guard.

Everything CPU-bound (decoding, chains, local models, encoding) runs in one thread pool, off the
event loop; OpenCV, NumPy and torch release the GIL, so the pool really works in parallel.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from fencebox import image
from fencebox.errors import InputError, SpecError
from fencebox.service.backends import Backend, LocalBackend, make_backend
from fencebox.service.batching import MicroBatcher
from fencebox.service.errors import Forbidden, NotFound
from fencebox.service.metrics import Metrics
from fencebox.service.security import Guard
from fencebox.service.settings import RouteConfig, Settings
from fencebox.spec import load_chain
from fencebox.transforms.base import Transform

T = TypeVar("T")


def is_identity(chain: Transform) -> bool:
    """Whether ``chain`` is the empty chain (``none``), which leaves images untouched."""
    from fencebox.chain import Chain

    return isinstance(chain, Chain) and len(chain) == 0


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
        )
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

    def _fit(self, batch: np.ndarray) -> np.ndarray:
        h, w, _ = self.backend.input_shape
        if batch.shape[1:3] == (h, w):
            return batch
        return np.stack([image.resize_to(im, h, w) for im in batch])

    def prepare(self, data: bytes, chain: Transform) -> tuple[np.ndarray, float, float]:
        """Decode, normalise to the model's input, run the chain: (1, H, W, C) uint8, decode s, chain s."""
        t0 = time.perf_counter()
        h, w, c = self.backend.input_shape
        img = image.decode(data, self.limits, channels=c, background=self.config.background)
        if img.shape[:2] != (h, w):
            if not self.config.resize:
                raise InputError(
                    f"route '{self.name}' expects {w}x{h} images (width x height), got {img.shape[1]}x{img.shape[0]}"
                )
            img = image.resize_to(img, h, w)
        t1 = time.perf_counter()
        out = self._fit(chain.run(img[None], None))
        return out, t1 - t0, time.perf_counter() - t1

    def purify_batch(self, batch: np.ndarray, chain: Transform) -> np.ndarray:
        """Run the chain on an already-decoded batch and fit it to the model's input."""
        return self._fit(batch if is_identity(chain) else chain.run(batch, None))

    def purify_image(self, data: bytes, chain: Transform, fmt: str) -> tuple[bytes, str, float, float, float]:
        """Decode (keeping the size), run the chain, encode: (bytes, media type, decode s, chain s, encode s)."""
        t0 = time.perf_counter()
        img = image.decode(data, self.limits, channels=None, background=self.config.background)
        t1 = time.perf_counter()
        out = chain.run(img[None], None)[0]
        t2 = time.perf_counter()
        body, media = image.encode(out, fmt)
        return body, media, t1 - t0, t2 - t1, time.perf_counter() - t2


class Runtime:
    """All routes plus the shared pool, metrics and guard; built and torn down by the app's lifespan."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics or Metrics()
        self.pool = ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="fencebox")
        self.guard = Guard(
            [k.get_secret_value() for k in settings.api_keys],
            settings.rate_limit,
            lambda reason: self.metrics.rejected.labels(reason).inc(),
            on_store_failure=lambda mode: self.metrics.budget_store_failures.labels(mode).inc(),
        )
        self.routes: dict[str, Route] = {}
        self.started = False
        self._torch_threads: int | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking function in the worker pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    async def start(self) -> None:
        """Load every route's chain and model, check the chain fits the model, start batchers."""
        if self.settings.torch_threads is not None:
            # Parallelism comes from the worker pool and batching; intra-op threads on top of it
            # oversubscribe the cores (a single small image took 50 ms instead of 0.05 ms under load).
            import torch

            self._torch_threads = torch.get_num_threads()
            torch.set_num_threads(self.settings.torch_threads)
        for cfg in self.settings.routes:
            try:
                chain = load_chain(cfg.chain)
            except SpecError as exc:
                raise SpecError(f"route '{cfg.name}': {exc}") from None
            backend = await self.run(make_backend, cfg.name, cfg.backend, self.pool, self.metrics)
            h, w, c = backend.input_shape
            try:
                await self.run(chain.run, np.zeros((1, h, w, c), np.uint8), 0)
            except Exception as exc:
                raise SpecError(
                    f"route '{cfg.name}': chain {chain} cannot run on {h}x{w}x{c} images: {exc}"
                ) from None
            await backend.start()
            if isinstance(backend, LocalBackend):  # warm up: the first torch call is slow
                await backend.infer(np.zeros((1, h, w, c), np.uint8))
            route = Route(cfg, chain, backend, self)
            route.batcher.start()
            self.routes[cfg.name] = route
        self.started = True

    async def close(self) -> None:
        """Stop batchers, close backends, shut the pool down."""
        for route in self.routes.values():
            await route.batcher.close()
            await route.backend.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.guard.close()
        self.started = False
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
