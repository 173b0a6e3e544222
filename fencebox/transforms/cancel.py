"""Cooperative cancellation of transform work: a deadline or abandoned request stops long loops.

The service installs a :class:`CancelToken` around the work of one request (:func:`cancel_scope`);
long-running transforms call :func:`check_cancelled` between blocks of work (per image, per
iteration block), which raises :class:`fencebox.errors.Cancelled` once the token is set or its
deadline has passed.  Outside any scope, :func:`check_cancelled` costs one attribute lookup.
Worker threads started by :func:`fencebox.transforms.base.apply_parallel` inherit the caller's token.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from fencebox.errors import Cancelled


class CancelToken:
    """A flag plus an optional monotonic deadline; set by whoever gives up on the work."""

    def __init__(self, deadline: float | None = None) -> None:
        self._event = threading.Event()
        self.deadline = deadline
        """``time.monotonic()`` value after which the work counts as cancelled (None: no deadline)."""

    def cancel(self) -> None:
        """Ask the work to stop at its next check."""
        self._event.set()

    @property
    def cancelled(self) -> bool:
        """Whether the work should stop now (cancelled, or past its deadline)."""
        if self._event.is_set():
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline


_local = threading.local()


def current_token() -> CancelToken | None:
    """The token of the work running on this thread, if any."""
    return getattr(_local, "token", None)


@contextmanager
def cancel_scope(token: CancelToken | None) -> Iterator[CancelToken | None]:
    """Run the body with ``token`` as this thread's cancellation token (None: no cancellation)."""
    previous = current_token()
    _local.token = token
    try:
        yield token
    finally:
        _local.token = previous


def check_cancelled() -> None:
    """Raise :class:`Cancelled` if this thread's work has been cancelled or passed its deadline."""
    token = getattr(_local, "token", None)
    if token is not None and token.cancelled:
        raise Cancelled("the request's deadline passed; its remaining work was dropped")
