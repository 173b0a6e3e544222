"""The runtime's guarantees on a real server: admission at the door, costed chains, deadlines that stop
work, and the one place stages are timed."""

from __future__ import annotations

import json
import socket
import sys
import time

import httpx
import numpy as np
import pytest

from fencebox.errors import Cancelled
from fencebox.service.runtime import _in_scope
from fencebox.service.settings import Settings
from fencebox.transforms.cancel import CancelToken
from tests.images import digit, png
from tests.service.helpers import route
from tests.service.servers import serve

SLOW_REF = "py:tests.service.servers:slow_model"


def _headers_only(url: str, path: str, length: int) -> socket.socket:
    """Open a connection and send a POST's headers announcing ``length`` bytes, but no body."""
    host, port = url.removeprefix("http://").split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {length}\r\n\r\n".encode()
    )
    return s


def _status(sock: socket.socket) -> int:
    head = sock.recv(65536).split(b"\r\n", 1)[0]
    return int(head.split()[1])


def test_admission_refuses_at_the_door_before_reading_the_body() -> None:
    settings = Settings(
        routes=[route(backend={"kind": "local", "model": SLOW_REF}, limits={"max_in_flight": 1})], threads=2
    )
    with serve(settings) as s:
        hold = _headers_only(s.url, "/v1/predict", 10_000)  # admitted, then waits for its body
        time.sleep(0.3)
        t = time.perf_counter()
        r = httpx.post(s.url + "/v1/predict", content=png(digit()), timeout=30)
        took = time.perf_counter() - t
        assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
        assert "in flight" in r.json()["error"]
        assert took < 5.0  # generous for a loaded CI box: it never waits for the slot
        metrics = httpx.get(s.url + "/metrics").text
        assert 'fencebox_rejected_total{reason="in_flight"} 1.0' in metrics
        assert 'fencebox_refusal_seconds_count{status="503"} 1.0' in metrics
        hold.close()
        time.sleep(0.3)
        assert httpx.post(s.url + "/v1/predict", content=png(digit()), timeout=30).status_code == 200


def test_the_stage_by_stage_purify_is_admitted_like_predict() -> None:
    """/v1/purify?stages=true holds an in-flight slot (503 at the door when none is free) and its
    stages are timed by the runtime (Server-Timing and the stage histogram)."""
    settings = Settings(
        routes=[route(backend={"kind": "local", "model": SLOW_REF}, limits={"max_in_flight": 1})], threads=2
    )
    with serve(settings) as s:
        r = httpx.post(s.url + "/v1/purify?stages=true", content=png(digit()), timeout=30)
        assert r.status_code == 200, r.text
        for stage in ("stages", "queue", "model", "total"):
            assert f"{stage};dur=" in r.headers["server-timing"]
        assert (
            'fencebox_stage_seconds_count{route="tiny",stage="stages"} 1.0'
            in httpx.get(s.url + "/metrics").text
        )
        hold = _headers_only(s.url, "/v1/predict", 10_000)  # admitted, then waits for its body
        time.sleep(0.3)
        r = httpx.post(s.url + "/v1/purify?stages=true", content=png(digit()), timeout=30)
        assert r.status_code == 503 and "in flight" in r.json()["error"], r.text
        hold.close()


def test_slow_upload_gets_408() -> None:
    settings = Settings(routes=[route(limits={"read_timeout_s": 0.5})], threads=2)
    with serve(settings) as s:
        sock = _headers_only(s.url, "/v1/predict", 10_000)
        sock.sendall(b"\x89PNG")  # a few bytes, then nothing
        assert _status(sock) == 408
        sock.close()


@pytest.mark.parametrize(
    ("chain", "words"),
    [
        ("resize_pad(min_scale=8, max_scale=8, out_size=16384)", "max_output_pixels is"),
        ("tv_min(iterations=100000)", "max_chain_cost is"),
    ],
)
def test_costly_overrides_are_refused_before_they_run(chain: str, words: str) -> None:
    with serve(Settings(routes=[route(allow_chain_override=True)], threads=2)) as s:
        t = time.perf_counter()
        r = httpx.post(s.url + "/v1/predict", params={"chain": chain}, content=png(digit()), timeout=60)
        assert r.status_code == 413 and words in r.json()["error"], r.text
        assert time.perf_counter() - t < 5.0  # refused from the declared cost (the run took 11-18 s)


@pytest.mark.parametrize("stages", [False, True])
def test_cpu_stops_within_a_second_of_the_504(stages: bool) -> None:
    """tv_min checks the request's cancel token: after the 504 the process goes idle (CPU time of
    this process only, so other load on the machine cannot make it flaky); the playground's
    stage-by-stage purify runs in the same data plane and stops the same way."""
    settings = Settings(
        routes=[route(allow_chain_override=True, limits={"timeout_s": 1.0, "max_chain_cost": 1e12})],
        threads=2,
    )
    with serve(settings) as s:
        r = httpx.post(
            s.url + ("/v1/purify?stages=true" if stages else "/v1/predict"),
            params={"chain": "tv_min(iterations=100000)"},
            content=png(digit()),
            timeout=60,
        )
        assert r.status_code == 504, r.text
        time.sleep(1.0)  # the cancelled work reaches its next check within this second
        cpu = time.process_time()
        time.sleep(1.0)
        assert time.process_time() - cpu < 0.3  # idle (tv_min alone keeps a core at 100%)


def test_work_past_its_deadline_is_dropped_before_it_starts() -> None:
    calls: list[int] = []
    expired = CancelToken(deadline=time.monotonic() - 1)
    with pytest.raises(Cancelled):
        _in_scope(expired, calls.append, 1)
    assert calls == []
    assert _in_scope(CancelToken(), lambda: 7) == 7


def test_purify_and_predict_agree_on_the_smallest_image() -> None:
    with (
        serve(Settings(routes=[route(chain="median(size=3)")], threads=2)) as s,
        httpx.Client(base_url=s.url) as c,
    ):
        for side, ok in ((2, False), (3, True)):
            img = png(np.full((side, side), 100, np.uint8))
            codes = {
                c.post("/v1/purify", content=img).status_code,
                c.post("/v1/predict", content=img).status_code,
            }
            assert codes == ({200} if ok else {400}), (side, codes)


def test_stage_timings_come_from_the_runtime() -> None:
    with serve(Settings(routes=[route()], threads=2)) as s:
        r = httpx.post(s.url + "/v1/predict", content=png(digit()), timeout=30)
        for stage in ("decode", "chain", "queue", "model", "total"):
            assert f"{stage};dur=" in r.headers["server-timing"]
        metrics = httpx.get(s.url + "/metrics").text
        for stage in ("decode", "chain", "queue", "model"):
            assert f'fencebox_stage_seconds_count{{route="tiny",stage="{stage}"}} 1.0' in metrics


def test_the_gil_switch_interval_is_set_while_serving_and_restored_after() -> None:
    before = sys.getswitchinterval()
    with serve(Settings(routes=[route()], threads=2, gil_switch_ms=0.5)) as s:
        assert httpx.get(s.url + "/v2/health/live", timeout=30).status_code == 200
        assert sys.getswitchinterval() == pytest.approx(0.0005)
    assert sys.getswitchinterval() == pytest.approx(before)


def test_small_v2_bodies_are_parsed_and_timed_like_large_ones() -> None:
    """A one-image binary body (parsed inline) and a large JSON one (parsed off the loop) both answer
    and both report a parse stage."""
    with serve(Settings(routes=[route(limits={"max_images": 64})], threads=2)) as s:
        for n, binary in ((1, True), (64, False)):
            x = np.zeros((n, 28, 28, 1), np.uint8)
            head = {"inputs": [{"name": "input", "datatype": "UINT8", "shape": list(x.shape)}]}
            if binary:
                head["inputs"][0]["parameters"] = {"binary_data_size": x.nbytes}
                h = json.dumps(head).encode()
                r = httpx.post(
                    s.url + "/v2/models/tiny/infer",
                    content=h + x.tobytes(),
                    headers={"inference-header-content-length": str(len(h))},
                    timeout=30,
                )
            else:
                head["inputs"][0]["data"] = x.ravel().tolist()
                r = httpx.post(s.url + "/v2/models/tiny/infer", json=head, timeout=30)
            assert r.status_code == 200, r.text
            assert "parse;dur=" in r.headers["server-timing"]
