"""The upstream backend against KServe's real Python ModelServer (a subprocess on loopback, serving
builtin:mnist), and
against deliberately broken V2 servers: down -> 502, slow -> 504, bad answer -> 502, recovery."""

from __future__ import annotations

import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import tritonclient.http as th

from tests.images import digit, png
from tests.service.helpers import mnist_expected, mnist_kserve, upstream_route
from tests.service.servers import KServeProcess, free_port, serve, tiny_settings


@pytest.fixture(scope="module")
def kserve() -> Iterator[KServeProcess]:
    """One KServe server for the module, started lazily by the first test (which first sees it down)."""
    yield from mnist_kserve()


def test_down_then_recovers(kserve: KServeProcess) -> None:
    settings = tiny_settings(**upstream_route(kserve.url, timeout_s=5, connect_timeout_s=1))
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/predict", content=png(digit()))
        assert r.status_code == 502 and "unreachable" in r.json()["error"], r.text
        assert kserve.url.removeprefix("http://") not in r.text
        assert c.get("/v2/health/ready").status_code == 503
        assert 'fencebox_upstream_errors_total{kind="down",route="up"} 1.0' in c.get("/metrics").text
        kserve.start()
        r = c.post("/v1/predict", content=png(digit(4)))
        assert r.status_code == 200, r.text
        assert r.json()["label"] == mnist_expected(digit(4))
        time.sleep(1.05)  # readiness is cached for a second
        assert c.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_upstream_matches_local_model(kserve: KServeProcess, datatype: str) -> None:
    kserve.ensure()
    settings = tiny_settings(**upstream_route(kserve.url, datatype=datatype))
    imgs = [digit(i) for i in range(6)]
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        labels = [c.post("/v1/predict", content=png(im)).json()["label"] for im in imgs]
        assert labels == [mnist_expected(im) for im in imgs]
        # and through fencebox's own V2 endpoint with the official client, batched to the upstream
        triton = th.InferenceServerClient(s.url.removeprefix("http://"))
        x = np.stack(imgs)[..., None]
        inp = th.InferInput("input", list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        assert triton.infer("up", [inp]).as_numpy("label").tolist() == labels
        triton.close()


def test_upstream_restart_recovers(kserve: KServeProcess) -> None:
    kserve.ensure()
    settings = tiny_settings(**upstream_route(kserve.url, timeout_s=5, connect_timeout_s=1))
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.post("/v1/predict", content=png(digit())).status_code == 200  # pooled connection open
        kserve.stop()
        assert c.post("/v1/predict", content=png(digit())).status_code == 502
        kserve.ensure()
        assert c.post("/v1/predict", content=png(digit())).status_code == 200


class _Broken(http.server.BaseHTTPRequestHandler):
    """A V2 server gone wrong; the model name picks the failure."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200, b'{"ready": true}')

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", 0))
        self.rfile.read(length)
        model = self.path.split("/")[3]
        if model == "slow":
            time.sleep(1.5)
            self._send(200, b"{}")
        elif model == "garbage":
            self._send(200, b"<html>definitely not V2</html>", "text/html")
        elif model == "error":
            self._send(500, b'{"error": "CUDA out of memory"}')
        elif model == "shape":
            out = {
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 1, 10], "data": [0.0] * 10}]
            }
            self._send(200, json.dumps(out).encode())
        elif model == "nan":
            out = {
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [1, 10], "data": ["NaN"] * 10}]
            }
            self._send(200, json.dumps(out).encode())


@pytest.fixture(scope="module")
def broken() -> Iterator[str]:
    port = free_port()
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port), _Broken)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{port}"
    srv.shutdown()
    srv.server_close()


@pytest.mark.parametrize(
    ("model", "status", "words", "kind"),
    [
        ("slow", 504, "did not answer within 0.5 s", "timeout"),
        ("garbage", 502, "unusable answer", "bad_answer"),
        ("error", 502, 'HTTP 500: {"error": "CUDA out of memory"}', "bad_status"),
        ("shape", 502, "expected [1, classes]", "bad_answer"),
        ("nan", 502, "NaN", "bad_answer"),
    ],
)
def test_broken_upstreams(broken: str, model: str, status: int, words: str, kind: str) -> None:
    settings = tiny_settings(**upstream_route(broken, model=model, timeout_s=0.5))
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/predict", content=png(digit()))
        assert r.status_code == status, r.text
        assert words in r.json()["error"]
        assert broken.removeprefix("http://") not in r.text  # what happened, not where (that is logged)
        assert f'fencebox_upstream_errors_total{{kind="{kind}",route="up"}} 1.0' in c.get("/metrics").text
        assert (
            f'fencebox_errors_total{{endpoint="/v1/predict",error="{"timeout" if status == 504 else "upstream_error"}"}}'
            in c.get("/metrics").text
        )
