"""Query budgets shared by replicas through a real redis-server on loopback.

Three real ``fencebox serve`` processes share one Redis: two refuse while Redis is down (``fail:
closed``), one falls back to its own bucket (``fail: open``); with Redis up all three behave alike.
Each test spends its own API key, so the tests do not share buckets.  Time bounds are upper bounds
measured around the requests (the budget can only have refilled during the time we measured), so a
slow machine makes them looser, never flaky; the lower bounds count tokens, not time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from fencebox.errors import ConfigError
from fencebox.service.budgets import BudgetUnavailable, RedisBucketStore
from fencebox.service.settings import RateLimitConfig, load_settings
from tests.images import digit, png
from tests.service.redis_server import RedisServer
from tests.service.servers import ROOT, TESTS, TINY_REF, free_port

RATE = 1.0  # tokens per second
BURST = 20.0
RETRY_S = 0.2  # replicas ask Redis again this long after a failure
KEYS = ["k-bound", "k-closed", "k-open", "k-restart", "k-expiry"]
IMAGE = png(digit(0))


@dataclass
class Replica:
    """One ``fencebox serve`` process."""

    url: str
    fail: str
    proc: subprocess.Popen[bytes]


def _config(redis_url: str, fail: str) -> dict[str, object]:
    return {
        "threads": 2,
        "api_keys": KEYS,
        "routes": [{"name": "tiny", "chain": "none", "backend": {"kind": "local", "model": TINY_REF}}],
        "rate_limit": {
            "enabled": True,
            "rate_per_s": RATE,
            "burst": BURST,
            "backend": "redis",
            "redis_url": redis_url,
            "fail": fail,
            "redis_timeout_s": 1.0,
            "retry_s": RETRY_S,
        },
    }


def _wait_live(replica: Replica, deadline: float) -> None:
    while True:
        if replica.proc.poll() is not None:
            err = replica.proc.stderr.read().decode() if replica.proc.stderr else ""
            raise RuntimeError(f"fencebox serve exited: {err[-2000:]}")
        try:
            if httpx.get(f"{replica.url}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("fencebox serve did not become ready in time")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def replicas(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Replica]]:
    """Three replicas sharing ``redis_server``: fail closed, closed, open."""
    folder = tmp_path_factory.mktemp("replicas")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "OMP_NUM_THREADS": "1"}
    started: list[Replica] = []
    try:
        for i, fail in enumerate(["closed", "closed", "open"]):
            path = Path(folder) / f"replica{i}.yaml"
            path.write_text(yaml.safe_dump(_config(redis_server.url, fail)))
            port = free_port()
            cmd = [sys.executable, "-m", "fencebox.cli", "serve", "--config", str(path), "--port", str(port)]
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            started.append(Replica(f"http://127.0.0.1:{port}", fail, proc))
        deadline = time.monotonic() + 120  # three torch imports at once on a loaded 2-core machine
        for r in started:
            _wait_live(r, deadline)
        yield started
    finally:
        for r in started:
            r.proc.terminate()
        for r in started:
            try:
                r.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait(timeout=10)
            if r.proc.stderr:
                r.proc.stderr.close()


def _purify(client: httpx.Client, replica: Replica, key: str) -> httpx.Response:
    return client.post(
        f"{replica.url}/v1/purify",
        content=IMAGE,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "image/png"},
    )


def _burst_of_requests(targets: list[Replica], key: str, n: int) -> tuple[list[int], float]:
    """``n`` requests for ``key``, spread round-robin over ``targets``, 6 in flight: (statuses, seconds).

    The seconds run from before the first request is sent to after the last answer, so they include
    every moment at which a replica could have charged the budget.
    """
    with httpx.Client(timeout=30) as client, ThreadPoolExecutor(6) as pool:
        start = time.monotonic()
        answers = list(pool.map(lambda i: _purify(client, targets[i % len(targets)], key), range(n)))
        elapsed = time.monotonic() - start
    for a in answers:
        if a.status_code == 429:
            assert int(a.headers["retry-after"]) >= 1 and a.json()["code"] == "rate_limited"
    return [a.status_code for a in answers], elapsed


def _assert_bound(statuses: list[int], elapsed: float) -> None:
    allowed = statuses.count(200)
    assert set(statuses) <= {200, 429}, statuses
    assert allowed >= BURST, f"a fresh key must get its whole burst: {allowed} < {BURST}"
    assert allowed <= BURST + RATE * elapsed, f"{allowed} allowed in {elapsed:.2f} s"


def _metric(replica: Replica, name: str, label: str) -> float:
    text = httpx.get(f"{replica.url}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith(name + "{") and label in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_replicas_share_one_budget(replicas: list[Replica]) -> None:
    # Per-replica budgets would let 3 x BURST = 60 through; the shared one allows BURST + RATE x t.
    statuses, elapsed = _burst_of_requests(replicas, "k-bound", 90)
    _assert_bound(statuses, elapsed)
    # 90 small requests take well under a second here; 40 s would be needed to blur the difference
    assert BURST + RATE * elapsed < 3 * BURST, f"too slow to tell shared from per-replica ({elapsed:.1f} s)"


def test_buckets_expire_when_idle(redis_server: RedisServer, replicas: list[Replica]) -> None:
    with httpx.Client(timeout=30) as client:
        assert _purify(client, replicas[0], "k-expiry").status_code == 200
    keys = redis_server.client().keys("fencebox:budget:*")
    # identity = the key's index in api_keys, the same on every replica
    key = f"fencebox:budget:key:{KEYS.index('k-expiry')}".encode()
    assert key in keys
    ttl_ms = redis_server.client().pttl(key)
    assert 0 < ttl_ms <= 1000 / RATE  # one token spent: full again (and gone) within 1 / RATE seconds
    deadline = time.monotonic() + 10
    while redis_server.client().exists(key) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not redis_server.client().exists(key)


def test_redis_down_fail_closed_and_open(redis_server: RedisServer, replicas: list[Replica]) -> None:
    closed = [r for r in replicas if r.fail == "closed"]
    (open_,) = [r for r in replicas if r.fail == "open"]
    before = {r.url: _metric(r, "fencebox_budget_store_failures_total", f'mode="{r.fail}"') for r in replicas}
    redis_server.stop()
    try:
        with httpx.Client(timeout=30) as client:
            for r in closed:
                for _ in range(3):
                    a = _purify(client, r, "k-closed")
                    assert a.status_code == 503, a.text
                    body = a.json()
                    assert body["code"] == "budget_unavailable" and "Redis" in body["error"]
                    assert int(a.headers["retry-after"]) >= 1
        # fail open: this replica's own bucket, with the same bound on that replica alone
        statuses, elapsed = _burst_of_requests([open_], "k-open", 2 * int(BURST) + 10)
        _assert_bound(statuses, elapsed)
        for r in closed:
            assert _metric(r, "fencebox_budget_store_failures_total", 'mode="closed"') >= before[r.url] + 3
            assert _metric(r, "fencebox_rejected_total", 'reason="budget_unavailable"') >= 3
        assert _metric(open_, "fencebox_budget_store_failures_total", 'mode="open"') >= before[open_.url] + (
            2 * BURST + 10
        )
    finally:
        redis_server.start()
        time.sleep(RETRY_S * 2)  # replicas ask Redis again only RETRY_S after their last failure


def test_redis_restart_refills_buckets_and_bound_holds(
    redis_server: RedisServer, replicas: list[Replica]
) -> None:
    statuses, _ = _burst_of_requests(replicas, "k-restart", int(BURST) + 10)
    assert 429 in statuses  # spent
    redis_server.restart()  # no persistence: every bucket is gone, i.e. full
    time.sleep(RETRY_S * 2)  # let replicas that saw the restart's refused connection ask Redis again
    statuses, elapsed = _burst_of_requests(replicas, "k-restart", 90)
    _assert_bound(statuses, elapsed)  # the whole burst again, and never more than BURST + RATE x t


def test_store_without_redis_fails_per_mode() -> None:
    """No server at all on the URL: closed raises the 503 error, open charges a local bucket."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    failures: list[str] = []
    closed = RedisBucketStore(
        RateLimitConfig(enabled=True, backend="redis", redis_url=url, burst=2, rate_per_s=0.001),
        failures.append,
    )
    with pytest.raises(BudgetUnavailable) as info:
        closed.take("someone", 1)
    assert info.value.status == 503 and "unreachable" in info.value.message
    opened = RedisBucketStore(
        RateLimitConfig(enabled=True, backend="redis", redis_url=url, burst=2, rate_per_s=0.001, fail="open"),
        failures.append,
    )
    assert [opened.take("someone", 1) > 0 for _ in range(3)] == [False, False, True]
    assert failures == ["closed", "open", "open", "open"]
    closed.close()
    opened.close()


def test_redis_backend_needs_a_url(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("rate_limit: {enabled: true, backend: redis}\n")
    with pytest.raises(ConfigError, match="redis_url"):
        load_settings(path)
    path.write_text("rate_limit: {enabled: true, backend: redis, redis_url: 'http://redis:6379'}\n")
    with pytest.raises(ConfigError, match="redis://"):
        load_settings(path)
