"""V2 over REST: the event loop stays free while 10 MB bodies are parsed, a spent budget is refused
before the body is read, the body limit follows from the route, odd shapes are 400; and the model
repository extension (``POST /v2/repository/index``) through the official tritonclient.http client."""

from __future__ import annotations

import json
import socket
import threading
import time
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from fencebox.service.settings import BackendConfig, RouteConfig, Settings
from tests.images import digit
from tests.service.helpers import load_corpus_module, route
from tests.service.servers import free_port, serve, tiny_settings


def _infer_doc(x: np.ndarray) -> bytes:
    doc = {
        "inputs": [{"name": "input", "datatype": "UINT8", "shape": list(x.shape), "data": x.ravel().tolist()}]
    }
    return json.dumps(doc).encode()


def test_liveness_answers_within_a_second_while_clients_send_10mb_bodies() -> None:
    big = load_corpus_module().nested_v2_body(10.0)
    settings = Settings(routes=[route(limits={"max_v2_body_bytes": 12_000_000})], threads=2)
    with serve(settings) as s:
        stop = time.monotonic() + 6.0
        answers: list[int] = []

        def flood() -> None:
            with httpx.Client(base_url=s.url, timeout=60) as c:
                while time.monotonic() < stop:
                    answers.append(c.post("/v2/models/tiny/infer", content=big).status_code)

        threads = [threading.Thread(target=flood) for _ in range(4)]
        for t in threads:
            t.start()
        worst = 0.0
        with httpx.Client(base_url=s.url, timeout=30) as probe:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                assert probe.get("/v2/health/live").status_code == 200
                worst = max(worst, time.perf_counter() - t0)
                time.sleep(0.05)
        for t in threads:
            t.join()
        assert answers and set(answers) == {400}  # parsed (wrong shape), answered, never 5xx
        assert worst < 1.0  # a liveness probe's timeout; was 1.9-11.3 s with the parse on the loop


def test_large_bodies_parsed_in_a_process_answer_like_small_ones() -> None:
    x = np.stack([digit(i) for i in range(8)])[..., None]
    body = _infer_doc(x)
    padded = (
        body[:-1] + b', "parameters": {"pad": "' + b"p" * 1_100_000 + b'"}}'
    )  # over the process threshold
    settings = Settings(routes=[route(limits={"max_images": 8, "max_v2_body_bytes": 4_000_000})], threads=2)
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        small = c.post("/v2/models/tiny/infer", content=body)
        large = c.post("/v2/models/tiny/infer", content=padded)
        assert small.status_code == large.status_code == 200, large.text
        assert small.json()["outputs"] == large.json()["outputs"]


def test_spent_budget_is_429_before_the_body_is_read() -> None:
    settings = Settings(
        routes=[route()],
        threads=2,
        api_keys=["k"],
        rate_limit={"enabled": True, "rate_per_s": 0.01, "burst": 1},
    )
    with serve(settings) as s:
        ok = httpx.post(
            s.url + "/v2/models/tiny/infer",
            content=_infer_doc(digit()[None, ..., None]),
            headers={"x-api-key": "k"},
        )
        assert ok.status_code == 200, ok.text
        host, port = s.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as sock:
            sock.sendall(
                b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\n"
                b"Content-Type: application/json\r\nContent-Length: 500000\r\n\r\n"
            )  # the body never comes: the answer cannot depend on reading it
            head = sock.recv(65536).split(b"\r\n", 1)[0]
        assert head.split()[1] == b"429"


def test_v2_body_limit_follows_from_the_route() -> None:
    settings = Settings(routes=[route(limits={"max_images": 2})], threads=2)
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        ok = c.post("/v2/models/tiny/infer", content=_infer_doc(np.full((2, 28, 28, 1), 255, np.uint8)))
        assert ok.status_code == 200, ok.text
        r = c.post("/v2/models/tiny/infer", content=b"[" + b"0," * 400_000 + b"0]")
        assert r.status_code == 413 and "accepts at most" in r.json()["error"]


def test_odd_shapes_are_400() -> None:
    corpus = load_corpus_module()
    with serve(Settings(routes=[route()], threads=2)) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        for shape, data in (([0, 10**30], []), ([0, 28, 28, 1], []), ([2**31, 28, 28, 1], [0])):
            r = c.post("/v2/models/tiny/infer", content=corpus.v2_json(shape, data))
            assert r.status_code == 400, (shape, r.text)


def test_a_dead_parse_worker_costs_no_request() -> None:
    x = np.stack([digit(i) for i in range(2)])[..., None]
    body = _infer_doc(x)
    padded = body[:-1] + b', "parameters": {"pad": "' + b"p" * 1_100_000 + b'"}}'
    settings = Settings(routes=[route(limits={"max_v2_body_bytes": 4_000_000})], threads=2)
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=60) as c:
        procs = s.app.state.runtime._procs
        assert procs is not None  # started with the app: this route admits bodies over 1 MiB
        for p in list(procs._processes.values()):
            p.kill()  # as the kernel's OOM killer would
            p.join(10)
        for _ in range(2):  # the first falls back to a thread, the next gets fresh workers
            r = c.post("/v2/models/tiny/infer", content=padded)
            assert r.status_code == 200, r.text


def _settings(**top: Any) -> Settings:
    """TinyNet as 'tiny', plus 'down': an upstream nobody listens on (the route exists, not ready)."""
    base = tiny_settings(_top=top)
    down = RouteConfig(
        name="down",
        backend=BackendConfig(
            kind="upstream",
            url=f"http://127.0.0.1:{free_port()}",
            input_shape=(28, 28, 1),
            connect_timeout_s=0.5,
        ),
    )
    return base.model_copy(update={"routes": [*base.routes, down]})


def test_repository_index_lists_every_route_with_its_state() -> None:
    with serve(_settings()) as s:
        triton = th.InferenceServerClient(s.url.removeprefix("http://"))
        index = triton.get_model_repository_index()
        assert [(m["name"], m["version"], m["state"]) for m in index] == [
            ("tiny", "1", "READY"),
            ("down", "1", "UNAVAILABLE"),
        ]
        assert "upstream" in index[1]["reason"]
        triton.close()
        ready = httpx.post(f"{s.url}/v2/repository/index", json={"ready": True}).json()
        assert [m["name"] for m in ready] == ["tiny"]
        for body in (b"[1]", b'{"ready": "yes"}', b"{oops"):
            r = httpx.post(f"{s.url}/v2/repository/index", content=body)
            assert r.status_code == 400 and "repository index request" in r.json()["error"], r.text


def test_repository_index_needs_a_key_when_keys_are_set() -> None:
    with serve(_settings(api_keys=["k"])) as s:
        triton = th.InferenceServerClient(s.url.removeprefix("http://"))
        with pytest.raises(InferenceServerException) as err:
            triton.get_model_repository_index()
        assert err.value.status() == "401"
        assert [m["name"] for m in triton.get_model_repository_index(headers={"x-api-key": "k"})] == [
            "tiny",
            "down",
        ]
        triton.close()
