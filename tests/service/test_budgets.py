"""The two bucket stores agree: Redis's Lua token bucket grants exactly what the in-memory one grants.

The Redis script reads Redis's clock, which a test cannot stop, so the property uses a refill rate so
slow (1 token per 1000 s) that the refill during an example (well under a second) is below 0.001
token; with whole-token costs that can never change a decision, so both stores must decide alike.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fencebox.service.budgets import MemoryBucketStore, RedisBucketStore, TokenBucket, make_bucket_store
from fencebox.service.security import Guard, TooManyRequests
from fencebox.service.settings import RateLimitConfig
from tests.service.redis_server import RedisServer

SLOW = 0.001  # tokens per second
_fresh = itertools.count()


@settings(max_examples=25, deadline=None)
@given(
    burst=st.integers(1, 20),
    costs=st.lists(st.integers(1, 20), min_size=1, max_size=30),
)
def test_redis_bucket_grants_what_the_memory_bucket_grants(
    redis_server: RedisServer, burst: int, costs: list[int]
) -> None:
    config = RateLimitConfig(
        enabled=True, rate_per_s=SLOW, burst=burst, backend="redis", redis_url=redis_server.url
    )
    shared = RedisBucketStore(config)
    frozen = TokenBucket(SLOW, burst, clock=lambda: 0.0)  # the reference: no refill at all
    who = f"caller-{next(_fresh)}"  # a fresh bucket per example
    try:
        for cost in costs:
            expected = frozen.take(cost)
            got = shared.take(who, cost)
            assert (got > 0) == (expected > 0), (cost, got, expected)
            if expected > 0:  # the wait is what is missing / rate, less what trickled in meanwhile
                assert expected - 1.0 <= got <= expected
    finally:
        shared.close()


def test_a_key_lives_until_its_bucket_is_full_again(redis_server: RedisServer) -> None:
    config = RateLimitConfig(
        enabled=True, rate_per_s=0.5, burst=10, backend="redis", redis_url=redis_server.url
    )
    store = RedisBucketStore(config)
    try:
        assert store.take("ttl", 3) == 0.0
        ttl = redis_server.client().pttl(config.key_prefix + "ttl")
        assert 5000 < ttl <= 6000  # 3 tokens at 0.5/s: full again in 6 s
    finally:
        store.close()


def test_backend_setting_picks_the_store(redis_server: RedisServer) -> None:
    assert isinstance(make_bucket_store(RateLimitConfig()), MemoryBucketStore)
    store = make_bucket_store(RateLimitConfig(backend="redis", redis_url=redis_server.url))
    assert isinstance(store, RedisBucketStore)
    store.close()


def test_guard_refuses_with_429_from_the_shared_bucket(redis_server: RedisServer) -> None:
    config = RateLimitConfig(
        enabled=True, rate_per_s=SLOW, burst=2, backend="redis", redis_url=redis_server.url
    )
    rejected: list[str] = []
    a = Guard([], config, on_reject=rejected.append)
    b = Guard([], config, on_reject=rejected.append)  # another replica
    a.charge("guard-shared")
    b.charge("guard-shared")
    with pytest.raises(TooManyRequests) as info:
        a.charge("guard-shared")
    assert int(info.value.headers["Retry-After"]) >= 1 and rejected == ["budget"]
    a.close()
    b.close()
