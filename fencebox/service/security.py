"""API keys (constant-time comparison) and per-key query budgets (token buckets).

Black-box attacks need thousands of queries; a budget per key turns that into days.  Keys are
read from ``Authorization: Bearer <key>`` or ``X-API-Key``; every configured key is compared
(with :func:`hmac.compare_digest` on SHA-256 digests) so the time taken says nothing about which
key, or how much of one, matched.  Where the buckets live (this process, or a Redis shared by every
replica) is :mod:`fencebox.service.budgets`'s concern: ``Guard`` only asks its ``BucketStore``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence

from starlette.requests import Request

from fencebox.service.budgets import (
    MAX_TRACKED_CALLERS,
    BucketStore,
    BudgetUnavailable,
    TokenBucket,
    make_bucket_store,
)
from fencebox.service.errors import BadRequest, TooManyRequests, Unauthorized, retry_after
from fencebox.service.settings import RateLimitConfig

__all__ = ["MAX_TRACKED_CALLERS", "BucketStore", "Guard", "TokenBucket"]


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


class Guard:
    """Authenticates requests against the configured keys and charges their query budget."""

    def __init__(
        self,
        keys: Sequence[str],
        rate: RateLimitConfig,
        on_reject: Callable[[str], None],
        store: BucketStore | None = None,
        on_store_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._digests = [_digest(k) for k in keys]
        self.rate = rate
        # Where the buckets live (rate_limit.backend): this process's memory, or Redis shared by replicas.
        self.store = store if store is not None else make_bucket_store(rate, on_store_failure)
        self._on_reject = on_reject

    @property
    def enabled(self) -> bool:
        """Whether API keys are required."""
        return bool(self._digests)

    @staticmethod
    def presented_key(headers: Mapping[str, str]) -> str | None:
        """The key in ``authorization: Bearer <key>`` or ``x-api-key`` (HTTP headers or gRPC metadata)."""
        auth = headers.get("authorization")
        if auth and auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return headers.get("x-api-key")

    def identify(self, request: Request) -> str:
        """Return the caller's identity (key index or client address); raise Unauthorized when keys are required."""
        client = request.client
        return self.authenticate(self.presented_key(request.headers), client.host if client else None)

    def authenticate(self, given: str | None, peer: str | None) -> str:
        """The identity of a caller presenting key ``given`` from address ``peer``, whatever the protocol.

        Without configured keys the identity is the address: the socket's peer, or what a proxy listed
        in ``forwarded_allow_ips`` says (never a header from anyone else, so a fresh X-Forwarded-For
        per request does not buy a fresh budget); with keys, Unauthorized unless one matches.
        """
        if not self._digests:
            return f"addr:{peer}" if peer else "addr:unknown"
        if not given:
            self._on_reject("no_key")
            raise Unauthorized(
                "an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        d = _digest(given)
        match = -1
        for i, ref in enumerate(self._digests):  # no early exit: time does not depend on which key matched
            if hmac.compare_digest(d, ref):
                match = i
        if match < 0:
            self._on_reject("bad_key")
            raise Unauthorized("the API key is not valid", headers={"WWW-Authenticate": "Bearer"})
        return f"key:{match}"

    def charge(self, identity: str, cost: float = 1.0) -> None:
        """Spend ``cost`` queries from ``identity``'s budget; raise TooManyRequests with Retry-After if spent."""
        if not self.rate.enabled:
            return
        if cost > self.rate.burst:
            raise BadRequest(
                f"this request costs {cost:g} queries, more than the query budget's burst of "
                f"{self.rate.burst:g}: send at most {int(self.rate.burst)} images per request"
            )
        try:
            wait = self.store.take(identity, cost)
        except BudgetUnavailable:
            self._on_reject("budget_unavailable")
            raise
        if wait > 0:
            self._on_reject("budget")
            raise TooManyRequests(
                f"query budget exhausted ({self.rate.rate_per_s:g}/s, burst {self.rate.burst:g}); "
                f"retry in {wait:.1f} s",
                headers=retry_after(wait),
            )

    def charge_rest(self, identity: str, total: float, paid: float) -> None:
        """Charge what a request costs beyond the ``paid`` part charged up front (V2: once its shape is known).

        A request costing more than the whole burst could never be served: 400 saying so.
        """
        if not self.rate.enabled:
            return
        if total > self.rate.burst:
            raise BadRequest(
                f"this request costs {total:g} queries, more than the query budget's burst of "
                f"{self.rate.burst:g}: send at most {int(self.rate.burst)} images per request"
            )
        if total > paid:
            self.charge(identity, total - paid)

    def tracked_callers(self) -> int:
        """How many callers' budgets are held in memory."""
        return self.store.tracked_callers()

    def close(self) -> None:
        """Release the budget store's connections."""
        self.store.close()

    def check(self, request: Request, cost: float = 1.0) -> str:
        """Authenticate, then charge ``cost`` queries; return the identity."""
        who = self.identify(request)
        self.charge(who, cost)
        return who
