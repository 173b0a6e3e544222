"""Micro-batching: requests to one route are grouped into one model call.

Requests wait at most ``max_delay_ms`` for company, and only while more requests are on their way
(announced by :meth:`MicroBatcher.expect` when they enter the route), so a lone request is not
delayed.  The queue is bounded in images; a full queue answers 503 with Retry-After.  ``workers``
batches may be in flight at once (useful for upstream backends).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from fencebox.service.errors import Overloaded, retry_after
from fencebox.service.metrics import Metrics

BatchFn = Callable[[np.ndarray], Awaitable[np.ndarray]]


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass
class _Item:
    images: np.ndarray
    future: asyncio.Future[tuple[np.ndarray, float, float]]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Groups submitted uint8 batches into model calls of at most ``max_batch`` images."""

    def __init__(
        self,
        route: str,
        fn: BatchFn,
        max_batch: int,
        max_delay_ms: float,
        max_queue: int,
        workers: int,
        metrics: Metrics,
    ) -> None:
        self.route = route
        self.fn = fn
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.max_queue = max_queue
        self.workers = workers
        self.metrics = metrics
        self._queue: deque[_Item] = deque()
        self._queued_images = 0
        self._expected = 0
        self._idle: deque[asyncio.Future[None]] = deque()  # workers waiting for a first item
        self._forming: deque[asyncio.Future[None]] = deque()  # workers waiting to fill a batch
        self._tasks: list[asyncio.Task[None]] = []
        self._recent_batch_s = 0.01
        self._gauge = metrics.queue_depth.labels(route)
        self._batch_hist = metrics.batch_size.labels(route)
        self._model_hist = metrics.stage.labels(route, "model")

    def start(self) -> None:
        """Start the worker tasks (call from the running event loop)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._worker(), name=f"batcher-{self.route}-{i}")
                for i in range(self.workers)
            ]

    async def close(self) -> None:
        """Stop the workers and fail whatever is still queued."""
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        while self._queue:
            item = self._queue.popleft()
            if not item.future.done():
                item.future.set_exception(Overloaded("the service is shutting down", headers=retry_after(1)))
        self._queued_images = 0

    @contextlib.contextmanager
    def expect(self) -> Iterator[None]:
        """Announce a request that will submit soon, so a forming batch waits for it."""
        self._expected += 1
        try:
            yield
        finally:
            self._expected -= 1

    @property
    def depth(self) -> int:
        """Images waiting in the queue."""
        return self._queued_images

    async def submit(self, images: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Queue a uint8 ``(n, H, W, C)`` batch; return (outputs for it, queue seconds, model seconds)."""
        n = int(images.shape[0])
        if self._queued_images + n > self.max_queue:
            self.metrics.rejected.labels("queue_full").inc()
            wait = max(self._recent_batch_s * (self._queued_images / max(1, self.max_batch)), 0.001)
            raise Overloaded(
                f"route '{self.route}' is overloaded: {self._queued_images} images queued (limit {self.max_queue})",
                headers=retry_after(wait),
            )
        fut: asyncio.Future[tuple[np.ndarray, float, float]] = asyncio.get_running_loop().create_future()
        self._queue.append(_Item(images, fut))
        self._queued_images += n
        self._gauge.set(self._queued_images)
        self._notify()
        return await fut

    def _notify(self) -> None:
        """Wake one worker: a batch being formed first, else an idle one (never a thundering herd)."""
        for waiters in (self._forming, self._idle):
            while waiters:
                w = waiters.popleft()
                if not w.done():
                    w.set_result(None)
                    return

    async def _wait(self, timeout: float | None) -> None:
        """Sleep until notified of a submission, or ``timeout`` seconds pass (cheaper than wait_for)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        waiters = self._idle if timeout is None else self._forming
        waiters.append(fut)
        handle = None if timeout is None else loop.call_later(timeout, _resolve, fut)
        try:
            await fut
        finally:
            if handle is not None:
                handle.cancel()
            if not fut.done():
                fut.cancel()

    def _pop(self) -> _Item:
        item = self._queue.popleft()
        self._queued_images -= int(item.images.shape[0])
        return item

    async def _collect(self) -> list[_Item]:
        while not self._queue:
            await self._wait(None)
        items = [self._pop()]
        count = int(items[0].images.shape[0])
        deadline = time.perf_counter() + self.max_delay
        while count < self.max_batch:
            if self._queue:
                nxt = int(self._queue[0].images.shape[0])
                if count + nxt > self.max_batch:
                    break
                items.append(self._pop())
                count += nxt
                continue
            remaining = deadline - time.perf_counter()
            if remaining <= 0 or self._expected <= 0:
                break
            await self._wait(remaining)
        self._gauge.set(self._queued_images)
        if self._queue:  # left-overs: hand them to another worker now
            self._notify()
        return items

    async def _worker(self) -> None:
        while True:
            items = await self._collect()
            live = [it for it in items if not it.future.done()]
            if not live:
                continue
            batch = live[0].images if len(live) == 1 else np.concatenate([it.images for it in live], axis=0)
            started = time.perf_counter()
            self._batch_hist.observe(batch.shape[0])
            try:
                out = await self.fn(batch)
            except asyncio.CancelledError:
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(
                            Overloaded("the service is shutting down", headers=retry_after(1))
                        )
                raise
            except Exception as exc:
                for it in live:
                    if not it.future.done():
                        it.future.set_exception(exc)
                continue
            model_s = time.perf_counter() - started
            self._recent_batch_s = 0.8 * self._recent_batch_s + 0.2 * model_s
            self._model_hist.observe(model_s)
            offset = 0
            for it in live:
                n = int(it.images.shape[0])
                if not it.future.done():
                    it.future.set_result((out[offset : offset + n], started - it.enqueued, model_s))
                offset += n
