"""The model repository extension of the REST Open Inference Protocol (``POST /v2/repository/index``),
through the official tritonclient.http client."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

from fencebox.service.settings import BackendConfig, RouteConfig, Settings
from tests.test_service_helpers import free_port, serve, tiny_settings


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
