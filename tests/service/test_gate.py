"""The admission gate: while a route is full, its requests get the endpoint's 503 at the door, and
every other answer (401, 404, 403, other routes) is exactly what the endpoint says."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from starlette.types import Message, Receive, Scope, Send

from fencebox.service import dataplane
from fencebox.service.gate import AdmissionGate
from fencebox.service.settings import Settings
from tests.images import digit, png
from tests.service.helpers import in_process, route
from tests.service.servers import ServerThread, serve
from tests.service.test_runtime import SLOW_REF

KEY = "gate-key"


@pytest.fixture(scope="module")
def full() -> Iterator[ServerThread]:
    """A server whose route 'tiny' (limit 1) is held full by a request waiting for its body, next to
    a free route 'free', API keys on."""
    settings = Settings(
        routes=[
            route(backend={"kind": "local", "model": SLOW_REF}, limits={"max_in_flight": 1}),
            route(name="free", allow_chain_override=False),
        ],
        api_keys=[KEY],
        threads=2,
    )
    with serve(settings) as s:
        host, port = s.url.removeprefix("http://").split(":")
        hold = socket.create_connection((host, int(port)), timeout=30)
        hold.sendall(  # admitted, then waits for a body that never comes
            f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {KEY}\r\n"
            "Content-Type: image/png\r\nContent-Length: 10000\r\n\r\n".encode()
        )
        time.sleep(0.3)
        yield s
        hold.close()


def _count(metrics: str, reason: str) -> float:
    """The value of ``fencebox_rejected_total{reason=...}`` in a /metrics text (0 when absent)."""
    prefix = f'fencebox_rejected_total{{reason="{reason}"}} '
    return next((float(line[len(prefix) :]) for line in metrics.splitlines() if line.startswith(prefix)), 0.0)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def _v2(name: str) -> tuple[str, dict[str, object]]:
    x = np.asarray(digit(), dtype=np.uint8).reshape(1, 28, 28, 1)
    msg = {
        "inputs": [{"name": "input", "shape": list(x.shape), "datatype": "UINT8", "data": x.ravel().tolist()}]
    }
    return f"/v2/models/{name}/infer", msg


def test_a_full_route_refuses_rest_and_v2_with_retry_after(full: ServerThread) -> None:
    for r in (
        httpx.post(full.url + "/v1/predict", content=png(digit()), headers=_auth(), timeout=30),
        httpx.post(full.url + "/v1/purify?model=tiny", content=png(digit()), headers=_auth(), timeout=30),
        httpx.post(full.url + _v2("tiny")[0], json=_v2("tiny")[1], headers=_auth(), timeout=30),
    ):
        assert r.status_code == 503, r.text
        assert r.json() == {
            "error": "route 'tiny' is at its limit of 1 requests in flight; retry shortly",
            "code": "overloaded",
        }
        assert int(r.headers["retry-after"]) >= 1
        assert r.headers["content-type"] == "application/json"
        assert "total;dur=" in r.headers["server-timing"]
    metrics = httpx.get(full.url + "/metrics").text
    assert 'fencebox_requests_total{endpoint="/v2/models/{name}/infer",method="POST",status="503"}' in metrics
    assert 'fencebox_errors_total{endpoint="/v1/purify",error="overloaded"}' in metrics


def test_the_key_and_the_route_are_checked_before_admission(full: ServerThread) -> None:
    before = httpx.get(full.url + "/metrics").text
    no_key = httpx.post(full.url + "/v1/predict", content=png(digit()), timeout=30)
    assert no_key.status_code == 401 and no_key.json()["code"] == "unauthorized"
    assert no_key.headers["www-authenticate"] == "Bearer"
    assert _count(httpx.get(full.url + "/metrics").text, "no_key") == _count(before, "no_key") + 1  # once
    unknown = httpx.post(
        full.url + "/v1/predict?model=nope", content=png(digit()), headers=_auth(), timeout=30
    )
    assert unknown.status_code == 404 and "routes: tiny, free" in unknown.json()["error"]
    wrong_key_v2 = httpx.post(full.url + _v2("tiny")[0], json=_v2("tiny")[1], timeout=30)
    assert wrong_key_v2.status_code == 401


def test_a_chain_override_is_answered_by_the_endpoint(full: ServerThread) -> None:
    """The override's 403 comes before admission at the endpoint; the gate leaves such requests alone."""
    r = httpx.post(
        full.url + "/v1/predict?model=tiny&chain=median(size=3)",
        content=png(digit()),
        headers=_auth(),
        timeout=30,
    )
    assert r.status_code == 403, r.text


def test_other_routes_and_endpoints_are_served_while_one_is_full(full: ServerThread) -> None:
    r = httpx.post(full.url + "/v1/predict?model=free", content=png(digit()), headers=_auth(), timeout=30)
    assert r.status_code == 200 and "label" in r.json(), r.text
    path, msg = _v2("free")
    assert httpx.post(full.url + path, json=msg, headers=_auth(), timeout=30).status_code == 200
    assert httpx.get(full.url + "/v2/models/tiny", headers=_auth(), timeout=30).status_code == 200
    assert httpx.get(full.url + "/v2/health/live", timeout=30).status_code == 200


def test_the_gate_refuses_without_running_the_app_and_passes_everything_else() -> None:
    """A refusal never reaches routing, dependencies or the endpoint: that is what keeps it cheap."""
    reached: list[str] = []

    async def endpoint(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])

    async def run() -> list[Message]:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        async def receive() -> Message:
            return {"type": "http.request", "body": b"", "more_body": False}

        async with in_process(Settings(routes=[route(limits={"max_in_flight": 1})])) as (app, _):
            gate = AdmissionGate(endpoint)
            admission = app.state.runtime.routes["tiny"].admission
            base = {"type": "http", "method": "POST", "headers": [], "app": app, "client": ("127.0.0.1", 1)}
            with dataplane.admitted(app.state.runtime.routes["tiny"]):
                assert admission.full
                for path, qs in (
                    ("/v1/predict", b""),
                    ("/v2/models/tiny/infer", b""),
                    ("/v1/purify", b"model=tiny"),
                ):
                    await gate({**base, "path": path, "query_string": qs}, receive, send)
                assert reached == []
                for path, qs in (
                    ("/v1/predict", b"chain=none"),
                    ("/v2/models/tiny/ready", b""),
                    ("/v1/models", b""),
                ):
                    await gate({**base, "path": path, "query_string": qs}, receive, send)
                assert reached == ["/v1/predict", "/v2/models/tiny/ready", "/v1/models"]
            assert not admission.full
            await gate({**base, "path": "/v1/predict", "query_string": b""}, receive, send)
            assert reached[-1] == "/v1/predict"
        return sent

    sent = asyncio.run(run())
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [503, 503, 503]
