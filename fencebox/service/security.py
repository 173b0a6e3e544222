"""API keys (constant-time comparison) and per-key query budgets (token buckets).

Black-box attacks need thousands of queries; a budget per key turns that into days.  Keys are
read from ``Authorization: Bearer <key>`` or ``X-API-Key``; every configured key is compared
(with :func:`hmac.compare_digest` on SHA-256 digests) so the time taken says nothing about which
key, or how much of one, matched.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable, Sequence

from starlette.requests import Request

from fencebox.service.errors import BadRequest, TooManyRequests, Unauthorized, retry_after
from fencebox.service.settings import RateLimitConfig

MAX_TRACKED_CALLERS = 10_000
"""Above this many callers, buckets that have refilled completely are dropped (a full bucket is a new one)."""


class TokenBucket:
    """``capacity`` tokens, refilled continuously at ``rate`` per second."""

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.capacity = float(capacity)
        self.tokens = float(capacity)
        self.clock = clock
        self.stamp = clock()

    def refill(self) -> float:
        """Add the tokens earned since the last call; return the current level."""
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        return self.tokens

    def take(self, cost: float = 1.0) -> float:
        """Spend ``cost`` tokens; return 0.0 on success, else the seconds until enough are available."""
        self.refill()
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


class Guard:
    """Authenticates requests against the configured keys and charges their query budget."""

    def __init__(self, keys: Sequence[str], rate: RateLimitConfig, on_reject: Callable[[str], None]) -> None:
        self._digests = [_digest(k) for k in keys]
        self.rate = rate
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()
        self._on_reject = on_reject

    @property
    def enabled(self) -> bool:
        """Whether API keys are required."""
        return bool(self._digests)

    @staticmethod
    def _presented(request: Request) -> str | None:
        auth = request.headers.get("authorization")
        if auth and auth[:7].lower() == "bearer ":
            return auth[7:].strip()
        return request.headers.get("x-api-key")

    def identify(self, request: Request) -> str:
        """Return the caller's identity (key index or client address); raise Unauthorized when keys are required.

        Without keys the identity is the client address: the socket's peer, or what a proxy listed in
        ``forwarded_allow_ips`` says (never a header from anyone else, so a fresh X-Forwarded-For per
        request does not buy a fresh budget).
        """
        if not self._digests:
            client = request.client
            return f"addr:{client.host}" if client else "addr:unknown"
        given = self._presented(request)
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
        with self._lock:
            bucket = self._buckets.get(identity)
            if bucket is None:
                if len(self._buckets) >= MAX_TRACKED_CALLERS:
                    self._forget_idle()
                bucket = self._buckets[identity] = TokenBucket(self.rate.rate_per_s, self.rate.burst)
            wait = bucket.take(cost)
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

    def _forget_idle(self) -> None:
        """Drop callers whose bucket is full again: forgetting them changes no one's budget."""
        full = [who for who, b in self._buckets.items() if b.refill() >= b.capacity]
        for who in full:
            del self._buckets[who]

    def tracked_callers(self) -> int:
        """How many callers' budgets are held in memory."""
        return len(self._buckets)

    def check(self, request: Request, cost: float = 1.0) -> str:
        """Authenticate, then charge ``cost`` queries; return the identity."""
        who = self.identify(request)
        self.charge(who, cost)
        return who
