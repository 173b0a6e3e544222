"""The app as a whole: HEAD on GET endpoints, proxy headers trusted only from forwarded_allow_ips,
a bug's 500 closes the connection, and importing the package does not start the app."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from fencebox.service.settings import Settings
from tests.images import digit, png
from tests.service.helpers import route
from tests.service.servers import ROOT, serve


@pytest.fixture(scope="module")
def server() -> str:
    with serve(Settings(routes=[route()], threads=2)) as s:
        yield s.url


@pytest.mark.parametrize("path", ["/v2/health/live", "/v2", "/v1/models", "/v2/models/tiny", "/metrics"])
def test_head_works_on_get_endpoints(server: str, path: str) -> None:
    get = httpx.get(server + path)
    head = httpx.head(server + path)
    assert get.status_code == head.status_code == 200
    assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted() -> None:
    budget = {"rate_limit": {"enabled": True, "rate_per_s": 0.01, "burst": 1}}
    data = png(digit())
    with serve(Settings(routes=[route()], threads=2, **budget)) as s:
        codes = [
            httpx.post(
                s.url + "/v1/predict", content=data, headers={"x-forwarded-for": f"10.0.0.{i}"}
            ).status_code
            for i in range(2)
        ]
        assert codes == [200, 429]  # a fresh X-Forwarded-For per request does not buy a fresh budget
    trusted = Settings(routes=[route()], threads=2, forwarded_allow_ips=["127.0.0.1"], **budget)
    with serve(trusted) as s:
        codes = [
            httpx.post(
                s.url + "/v1/predict", content=data, headers={"x-forwarded-for": f"10.0.0.{i}"}
            ).status_code
            for i in range(2)
        ]
        assert codes == [200, 200]  # behind a trusted proxy, each client has its own budget


def test_a_bugs_500_closes_the_connection_and_the_next_request_works() -> None:
    settings = Settings(
        routes=[route(backend={"kind": "local", "model": "py:tests.service.servers:broken_model"})],
        threads=2,
    )
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/predict", content=png(digit()))
        assert r.status_code == 500 and r.headers["connection"] == "close"
        assert r.json() == {"error": "internal server error", "code": "internal"}
        assert c.get("/v2/health/live").status_code == 200  # the client reconnects cleanly


def test_importing_the_service_package_loads_neither_fastapi_nor_torch() -> None:
    code = (
        "import sys, fencebox.service.policy, fencebox.service.settings, fencebox.service.v2codec; "
        "print(sorted(m for m in ('torch', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"
