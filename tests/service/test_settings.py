"""Configuration (YAML + environment), the ``fencebox serve`` command, and the container manifests."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from typer.testing import CliRunner

from fencebox.errors import ConfigError
from fencebox.service import create_app, load_settings
from fencebox.service.settings import BackendConfig, RouteConfig, Settings
from tests.service.servers import ROOT, TESTS, TINY_REF, free_port

CONFIG = f"""
host: 127.0.0.1
port: 9001
threads: 2
api_keys: [secret]
routes:
  - name: tiny
    chain: "bit_depth(bits=4)"
    policy: topk
    topk: 3
    backend: {{kind: local, model: "{TINY_REF}"}}
    batching: {{max_batch: 8, max_delay_ms: 1}}
  - name: remote
    backend: {{kind: upstream, url: "http://127.0.0.1:1", input_shape: [28, 28, 1]}}
default_route: tiny
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "fencebox.yaml"
    p.write_text(text)
    return p


def test_defaults_serve_builtin_mnist_with_fencebox_default() -> None:
    s = load_settings()
    assert (s.host, s.port) == ("127.0.0.1", 8000)
    (route,) = s.routes
    assert route.name == "mnist" and route.chain == "fencebox-default" and route.policy == "label"
    assert route.backend.kind == "local" and route.backend.model == "builtin:mnist"


def test_yaml_file_env_and_arguments(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, CONFIG)
    s = load_settings(path)
    assert s.port == 9001 and s.default.name == "tiny" and s.routes[0].topk == 3
    assert s.routes[0].batching.max_batch == 8 and s.routes[1].backend.input_shape == (28, 28, 1)
    assert s.api_keys[0].get_secret_value() == "secret" and "secret" not in repr(s)
    monkeypatch.setenv("FENCEBOX_PORT", "9002")
    monkeypatch.setenv("FENCEBOX_RATE_LIMIT__ENABLED", "true")
    s = load_settings(path)
    assert s.port == 9002 and s.rate_limit.enabled  # environment beats the file
    assert load_settings(path, port=9003).port == 9003  # arguments beat the environment


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("routes: []", "at least one route"),
        ("routes: [{name: a}, {name: a}]", "repeated: a"),
        ("routes: [{name: a, backend: {kind: upstream}}]", "needs 'url'"),
        ("routes: [{name: a, backend: {kind: upstream, url: 'http://x'}}]", "input_shape"),
        ("routes: [{name: a, policy: everything}]", "routes.0.policy"),
        ("routes: [{name: a, batching: {max_batch: 0}}]", "routes.0.batching.max_batch"),
        ("routes: [{name: a, colour: red}]", "routes.0.colour"),
        ("default_route: b\nroutes: [{name: a}]", "default_route 'b'"),
        ("routes: [{name: a, limits: {max_images: 9}, batching: {max_queue: 8}}]", "could never be queued"),
    ],
)
def test_invalid_config_names_the_field(tmp_path: Path, text: str, words: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(words)):
        load_settings(_write(tmp_path, text))


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/fencebox.yaml")


def test_invalid_yaml_syntax(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(_write(tmp_path, "routes: [unclosed"))


def test_binary_config_file(tmp_path: Path) -> None:
    path = tmp_path / "fencebox.yaml"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="not UTF-8 text"):  # once a bare UnicodeDecodeError traceback
        load_settings(path)


def test_bad_chain_fails_at_startup() -> None:
    s = Settings(
        routes=[RouteConfig(name="t", backend=BackendConfig(model=TINY_REF), chain="nope_transform()")]
    )
    app = create_app(s)

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(ConfigError, match="route 't'"):
        asyncio.run(start())


def test_serve_command_registered() -> None:
    from fencebox.cli import app

    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for opt in ("--config", "--host", "--port"):
        assert opt in result.output
    bad = CliRunner().invoke(app, ["serve", "--config", "/nonexistent.yaml"])
    assert bad.exit_code == 2


def test_fencebox_serve_end_to_end(tmp_path: Path) -> None:
    port = free_port()
    path = _write(tmp_path, CONFIG)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS)]), "FENCEBOX_API_KEYS": "[]"}
    cmd = [sys.executable, "-m", "fencebox.cli", "serve", "--config", str(path), "--port", str(port)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/v2/health/live", timeout=1)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "fencebox serve did not start"
            time.sleep(0.2)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()
        assert [m["name"] for m in models["models"]] == ["tiny", "remote"]
        assert models["models"][0]["chain"] == 'bit_depth(bits=4, mode="round")'
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready").status_code == 503  # 'remote' is down
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        if proc.stderr:
            proc.stderr.close()


# ----- containers: no engine here, so check that the manifests parse and point at real endpoints --------


def _app_paths() -> set[str]:
    return set(create_app(Settings()).openapi()["paths"])


def test_dockerfile() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, flags=re.M)
    assert stages == ["build", "kserve-upstream", "runtime"]
    runtime = text.split("AS runtime", 1)[1]
    assert re.search(r"^USER 10001$", runtime, flags=re.M)
    build = text.split("AS build", 1)[1].split("AS kserve-upstream", 1)[0]
    assert "RUN make .venv/.installed-base" in build, "the image must use the README's own set-up step"
    assert "$(VENV)/.installed-base:" in (ROOT / "Makefile").read_text()
    health = re.search(r"HEALTHCHECK.*?CMD \[(.*?)\]$", runtime, flags=re.S | re.M)
    assert health and "http://127.0.0.1:8000/v2/health/ready" in health.group(1)
    assert "/v2/health/ready" in _app_paths()
    assert 'ENTRYPOINT ["fencebox", "serve"]' in runtime and "EXPOSE 8000" in runtime


def test_compose_puts_fencebox_in_front_of_kserve() -> None:
    doc = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    svc = doc["services"]
    assert (
        svc["kserve"]["build"]["target"] == "kserve-upstream"
        and svc["fencebox"]["build"]["target"] == "runtime"
    )
    assert "--http_port" in svc["kserve"]["command"]
    kport = svc["kserve"]["command"][svc["kserve"]["command"].index("--http_port") + 1]
    config = yaml.safe_load(doc["configs"]["fencebox-config"]["content"])
    settings = Settings(**config)
    backend = settings.routes[0].backend
    assert backend.kind == "upstream" and backend.url == f"http://kserve:{kport}"
    assert backend.upstream_model == svc["kserve"]["command"][svc["kserve"]["command"].index("--name") + 1]
    assert svc["fencebox"]["depends_on"]["kserve"]["condition"] == "service_healthy"
    assert svc["fencebox"]["ports"] == ["8000:8000"]
    assert "/v2/health/ready" in " ".join(svc["fencebox"]["healthcheck"]["test"])


def test_k8s_manifests() -> None:
    docs = {}
    for f in sorted((ROOT / "docker" / "k8s").glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d["metadata"]["labels"]["app.kubernetes.io/name"] == "fencebox":  # not redis, the RayJob
                docs[d["kind"]] = d
    assert set(docs) == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"}
    dep, svc, hpa, cm = (
        docs["Deployment"],
        docs["Service"],
        docs["HorizontalPodAutoscaler"],
        docs["ConfigMap"],
    )
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": 8000} and container["args"][-1] == "8000"
    paths = _app_paths()
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in paths and get["port"] in ports
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert svc["spec"]["selector"] == dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
    assert container["args"][1] == mount["mountPath"] + "/config.yaml"
    Settings(**yaml.safe_load(cm["data"]["config.yaml"]))  # the shipped configuration is valid
