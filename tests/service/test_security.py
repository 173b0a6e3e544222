"""API keys, query budgets, bounded queues, deadlines and the micro-batcher, on real servers."""

from __future__ import annotations

import asyncio
import json

import httpx
import numpy as np
import pytest

from fencebox.service.batching import MicroBatcher
from fencebox.service.errors import Overloaded
from fencebox.service.metrics import Metrics
from fencebox.service.security import TokenBucket
from tests.images import digit, png
from tests.service.servers import serve, tiny_settings

SLOW_REF = "py:tests.service.servers:slow_model"


def test_api_keys_required_and_checked() -> None:
    settings = tiny_settings(_top={"api_keys": ["k-one", "k-two"]})
    with serve(settings) as s, httpx.Client(base_url=s.url) as c:
        data = png(digit())
        r = c.post("/v1/predict", content=data)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert (
            c.post("/v1/predict", content=data, headers={"authorization": "Bearer wrong"}).status_code == 401
        )
        assert (
            c.post("/v1/predict", content=data, headers={"authorization": "Bearer k-two"}).status_code == 200
        )
        assert c.post("/v1/predict", content=data, headers={"x-api-key": "k-one"}).status_code == 200
        assert c.get("/v2/models/tiny").status_code == 401
        assert c.post("/v2/models/tiny/infer", content=b"{}").status_code == 401
        assert c.get("/v2/models/tiny", headers={"x-api-key": "k-one"}).status_code == 200
        assert c.get("/v2/health/ready").status_code == 200  # probes stay open
        assert c.get("/metrics").status_code == 200
        assert 'fencebox_rejected_total{reason="bad_key"} 1.0' in c.get("/metrics").text


def test_query_budget_per_key_answers_429_with_retry_after() -> None:
    settings = tiny_settings(
        _top={"api_keys": ["a", "b"], "rate_limit": {"enabled": True, "rate_per_s": 0.5, "burst": 3}}
    )
    with serve(settings) as s, httpx.Client(base_url=s.url) as c:
        data = png(digit())
        codes = [
            c.post("/v1/predict", content=data, headers={"x-api-key": "a"}).status_code for _ in range(4)
        ]
        assert codes == [200, 200, 200, 429]
        r = c.post("/v1/predict", content=data, headers={"x-api-key": "a"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "budget" in r.json()["error"]
        assert c.post("/v1/predict", content=data, headers={"x-api-key": "b"}).status_code == 200  # per key

        # a V2 request is charged per image: 3 images exceed b's remaining 2 tokens
        def infer(n: int) -> httpx.Response:
            x = np.zeros((n, 28, 28, 1), np.uint8)
            doc = {
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "UINT8",
                        "shape": [n, 28, 28, 1],
                        "data": x.ravel().tolist(),
                    }
                ]
            }
            return c.post("/v2/models/tiny/infer", content=json.dumps(doc), headers={"x-api-key": "b"})

        assert infer(3).status_code == 429
        # more images than the whole burst could never be served: a 400 saying so, not an endless 429
        r = infer(4)
        assert r.status_code == 400 and "at most 3 images" in r.json()["error"]


def test_idle_callers_are_forgotten_without_changing_budgets(monkeypatch: pytest.MonkeyPatch) -> None:
    from fencebox.service import budgets, security
    from fencebox.service.settings import RateLimitConfig

    monkeypatch.setattr(budgets, "MAX_TRACKED_CALLERS", 3)  # the memory BucketStore's cap
    guard = security.Guard(
        [], RateLimitConfig(enabled=True, rate_per_s=2.0, burst=2), on_reject=lambda r: None
    )
    guard.charge("busy", 2)  # spent: must be remembered
    for i in range(2):
        guard.charge(f"idle-{i}", 1)
    import time

    time.sleep(1.1)  # the idle ones refill completely at 2/s; "busy" too, so spend it again
    guard.charge("busy", 2)
    guard.charge("new", 1)
    assert guard.tracked_callers() <= 2  # the full (idle) buckets were dropped
    with pytest.raises(security.TooManyRequests):
        guard.charge("busy", 2)


def test_token_bucket_refills_over_time() -> None:
    now = [0.0]
    b = TokenBucket(rate=2.0, capacity=2, clock=lambda: now[0])
    assert b.take() == 0 and b.take() == 0
    assert b.take() == pytest.approx(0.5)
    now[0] = 0.5
    assert b.take() == 0
    assert b.take(5) == pytest.approx(2.5)  # more than the bucket holds: honest wait, never granted


def test_full_queue_answers_503_with_retry_after() -> None:
    settings = tiny_settings(
        backend={"kind": "local", "model": SLOW_REF},
        batching={"max_batch": 1, "max_queue": 2},
        limits={"max_images": 2},
    )
    with serve(settings) as s:

        async def burst() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=s.url, timeout=30) as c:
                return list(
                    await asyncio.gather(*(c.post("/v1/predict", content=png(digit(i))) for i in range(8)))
                )

        rs = asyncio.run(burst())
        codes = sorted(r.status_code for r in rs)
        assert 200 in codes and 503 in codes, codes
        busy = next(r for r in rs if r.status_code == 503)
        assert int(busy.headers["retry-after"]) >= 1 and "overloaded" in busy.json()["error"]
        assert 'fencebox_rejected_total{reason="queue_full"}' in httpx.get(s.url + "/metrics").text


def test_deadline_answers_504() -> None:
    settings = tiny_settings(backend={"kind": "local", "model": SLOW_REF}, limits={"timeout_s": 0.1})
    with serve(settings) as s:
        r = httpx.post(s.url + "/v1/predict", content=png(digit()), timeout=30)
        assert r.status_code == 504 and "0.1 s" in r.json()["error"]


def test_resize_false_refuses_other_sizes() -> None:
    with serve(tiny_settings(resize=False)) as s:
        r = httpx.post(s.url + "/v1/predict", content=png(np.zeros((30, 20), np.uint8)))
        assert r.status_code == 400 and "expects 28x28" in r.json()["error"]
        assert httpx.post(s.url + "/v1/predict", content=png(digit())).status_code == 200


def _batcher(max_batch: int, max_queue: int, delay_ms: float = 50.0) -> tuple[MicroBatcher, list[int]]:
    sizes: list[int] = []

    async def fn(batch: np.ndarray) -> np.ndarray:
        sizes.append(batch.shape[0])
        await asyncio.sleep(0.01)
        return batch.reshape(batch.shape[0], -1)[:, :1].astype(np.float32)

    return MicroBatcher("t", fn, max_batch, delay_ms, max_queue, 1, Metrics()), sizes


def test_batcher_groups_up_to_max_batch_and_routes_answers() -> None:
    async def go() -> tuple[list[float], list[int]]:
        b, sizes = _batcher(max_batch=4, max_queue=100)
        b.start()
        items = [np.full((1, 2, 2, 1), i, np.uint8) for i in range(10)]
        with b.expect():  # more requests announced: the batch waits to fill
            results = await asyncio.gather(*(b.submit(x) for x in items))
        await b.close()
        return [float(r[0][0, 0]) for r in results], sizes

    values, sizes = asyncio.run(go())
    assert values == [float(i) for i in range(10)]
    assert max(sizes) == 4 and sum(sizes) == 10


def test_batcher_lone_request_does_not_wait() -> None:
    async def go() -> float:
        b, _ = _batcher(max_batch=32, max_queue=10, delay_ms=2000)
        b.start()
        loop = asyncio.get_running_loop()
        t = loop.time()
        await b.submit(np.zeros((1, 2, 2, 1), np.uint8))
        await b.close()
        return loop.time() - t

    assert asyncio.run(go()) < 1.0  # nobody announced: no waiting for the 2 s window


def test_batcher_bounded_queue_and_errors_propagate() -> None:
    async def go() -> None:
        async def boom(batch: np.ndarray) -> np.ndarray:
            raise ValueError("model broke")

        b = MicroBatcher("t", boom, 2, 0, 1, 1, Metrics())
        with pytest.raises(Overloaded):  # not started: the first fills the queue, the second is refused
            first = asyncio.ensure_future(b.submit(np.zeros((1, 1, 1, 1), np.uint8)))
            await asyncio.sleep(0)
            await b.submit(np.zeros((1, 1, 1, 1), np.uint8))
        b.start()
        with pytest.raises(ValueError, match="model broke"):
            await first
        await b.close()

    asyncio.run(go())
