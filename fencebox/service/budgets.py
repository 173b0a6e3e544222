"""Where query budgets live: a :class:`BucketStore` per process (memory) or shared by replicas (Redis).

A budget is a token bucket: ``burst`` tokens, refilled continuously at ``rate_per_s``.  With one
replica the buckets can live in its memory; with N replicas behind a load balancer each replica's
memory would give an attacker N budgets, so :class:`RedisBucketStore` keeps them in one Redis,
charged atomically by one Lua script per charge (EVALSHA) that reads Redis's own clock, so the
replicas' clocks do not matter.  A bucket's key expires once it would have refilled completely:
a full bucket and a missing key are the same thing, so idle callers cost Redis nothing.

When Redis cannot be reached, :class:`RedisBucketStore` does what ``rate_limit.fail`` says:
``closed`` (the default) refuses the request with 503 :class:`BudgetUnavailable`; ``open`` charges a
bucket in this replica's memory instead (each replica then enforces the budget on its own).  After a
failure Redis is not asked again for ``retry_s`` seconds, so an outage costs each request at most one
connection timeout per ``retry_s``, not one each.  When Redis restarts empty, every bucket starts
full again: the bound ``burst + rate x t`` then holds from the restart on.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from fencebox.errors import ConfigError
from fencebox.service.errors import Overloaded
from fencebox.service.settings import RateLimitConfig

MAX_TRACKED_CALLERS = 10_000
"""Above this many callers, buckets that have refilled completely are dropped (a full bucket is a new one)."""


class BudgetUnavailable(Overloaded):
    """The shared budget store cannot be reached and ``rate_limit.fail`` is ``closed`` (503)."""

    code = "budget_unavailable"


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


class BucketStore(Protocol):
    """Keeps one token bucket per caller; the only thing :class:`~fencebox.service.security.Guard` asks."""

    def take(self, identity: str, cost: float) -> float:
        """Spend ``cost`` of ``identity``'s tokens: 0.0 on success, else the seconds until there are enough.

        Raises :class:`BudgetUnavailable` when the budget cannot be checked and the policy is to refuse.
        """
        ...

    def tracked_callers(self) -> int:
        """How many callers' buckets this process holds in memory."""
        ...

    def close(self) -> None:
        """Release connections (nothing for memory)."""
        ...


class MemoryBucketStore:
    """Buckets in this process's memory (thread-safe); full, idle buckets are forgotten past a cap."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def take(self, identity: str, cost: float) -> float:
        """Charge ``identity``'s in-memory bucket (see :meth:`BucketStore.take`)."""
        with self._lock:
            bucket = self._buckets.get(identity)
            if bucket is None:
                if len(self._buckets) >= MAX_TRACKED_CALLERS:
                    self._forget_idle()
                bucket = self._buckets[identity] = TokenBucket(self.rate, self.burst, self.clock)
            return bucket.take(cost)

    def _forget_idle(self) -> None:
        """Drop callers whose bucket is full again: forgetting them changes no one's budget."""
        full = [who for who, b in self._buckets.items() if b.refill() >= b.capacity]
        for who in full:
            del self._buckets[who]

    def tracked_callers(self) -> int:
        """How many callers' buckets are held in memory."""
        return len(self._buckets)

    def close(self) -> None:
        """Nothing to release."""


# KEYS[1]: the bucket.  ARGV: rate per second, capacity, cost.  Returns the wait in seconds as a
# string (0 = charged).  Redis's clock (TIME) is the only clock, so replicas need not agree on time;
# the stamp is kept in whole microseconds (exact in a double), tokens with 17 significant digits.
# The key lives exactly as long as the bucket takes to refill completely (then it is as good as new).
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = capacity
  stamp = now
end
if now > stamp then
  tokens = math.min(capacity, tokens + (now - stamp) * rate / 1000000)
  stamp = now
end
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'stamp', string.format('%d', stamp))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil((capacity - tokens) / rate * 1000)))
return string.format('%.17g', wait)
"""


class RedisBucketStore:
    """Buckets in one Redis shared by every replica: one atomic Lua script per charge (EVALSHA).

    ``on_failure(mode)`` is called for every charge that could not reach Redis, with the mode that
    answered it (``closed``: refused with 503; ``open``: charged locally instead).
    """

    def __init__(
        self,
        config: RateLimitConfig,
        on_failure: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            import redis  # optional extra: only the redis backend needs it
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ConfigError(
                "rate_limit.backend 'redis' needs the redis client: pip install 'fencebox[redis]'"
            ) from None
        if not config.redis_url:
            raise ConfigError("rate_limit.backend 'redis' needs rate_limit.redis_url")
        self.config = config
        self.rate = config.rate_per_s
        self.burst = config.burst
        self.prefix = config.key_prefix
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._client: Any = redis.Redis.from_url(
            config.redis_url,
            socket_timeout=config.redis_timeout_s,
            socket_connect_timeout=config.redis_timeout_s,
            # one immediate retry on a fresh connection: enough after a Redis restart broke the pooled
            # ones, and an outage costs at most two timeouts per retry_s (then the breaker answers)
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            health_check_interval=0,
        )
        self._script: Any = self._client.register_script(TOKEN_BUCKET_LUA)
        self._fallback = MemoryBucketStore(self.rate, self.burst, clock)
        self._on_failure = on_failure or (lambda mode: None)
        self._clock = clock
        self._down_until = -math.inf
        self._lock = threading.Lock()

    def take(self, identity: str, cost: float) -> float:
        """Charge ``identity``'s shared bucket; on a Redis failure, refuse or charge locally per ``fail``."""
        if self._clock() >= self._down_until:
            try:
                wait = self._script(keys=[self.prefix + identity], args=[self.rate, self.burst, cost])
                return float(wait)
            except self._errors as exc:
                with self._lock:
                    self._down_until = self._clock() + self.config.retry_s
                return self._failed(identity, cost, exc)
        return self._failed(identity, cost, None)

    def _failed(self, identity: str, cost: float, exc: BaseException | None) -> float:
        """What a charge does while Redis is unreachable: 503 (closed) or the local bucket (open)."""
        mode = self.config.fail
        self._on_failure(mode)
        if mode == "open":
            return self._fallback.take(identity, cost)
        why = f": {type(exc).__name__}" if exc is not None else ""
        raise BudgetUnavailable(
            f"the shared query-budget store (Redis) is unreachable{why}; requests are refused until it is "
            f"back (rate_limit.fail: closed). Retry in {self.config.retry_s:g} s.",
            headers={"Retry-After": str(max(1, math.ceil(self.config.retry_s)))},
        )

    def tracked_callers(self) -> int:
        """Buckets held in this process's memory: only the fallback's (``fail: open`` during outages)."""
        return self._fallback.tracked_callers()

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def make_bucket_store(
    config: RateLimitConfig, on_failure: Callable[[str], None] | None = None
) -> BucketStore:
    """The store ``rate_limit.backend`` names: ``memory`` (this process) or ``redis`` (shared)."""
    if config.backend == "redis":
        return RedisBucketStore(config, on_failure)
    return MemoryBucketStore(config.rate_per_s, config.burst)
