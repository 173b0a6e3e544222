"""The deployment manifests are checked offline against the schemas their tools use.

- every Kubernetes document in docker/k8s/ against the Kubernetes JSON schemas that
  ``kubernetes-validate`` ships (strict: unknown fields are errors, as ``kubectl --validate=strict``);
- the KubeRay ``RayJob`` against the schema vendored in docker/schemas/ (see its description), whose
  pod templates point back into the same Kubernetes schemas;
- docker/compose.yaml against the Compose Specification's JSON schema (vendored, docker/schemas/);
- the configuration that the ConfigMap and the compose file hand to ``fencebox serve`` loads with the
  service's own loader, and its Redis URL names the Redis that the same manifests run.

Sockets are blocked while validating: nothing here may need the network.
"""

from __future__ import annotations

import copy
import json
import shlex
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import typer.main
import yaml
from referencing import Registry, Resource

from fencebox.cli import app as cli_app
from fencebox.service.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "docker" / "k8s"
SCHEMAS = ROOT / "docker" / "schemas"
K8S_VERSION = "1.31"  # the oldest Kubernetes minor the manifests promise to work with
K8S_LATEST = ".".join(kubernetes_validate.latest_version().split(".")[:2])  # and the newest it ships


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Validation must work offline: any connection attempt fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("manifest validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return docs


DOCS = _k8s_documents()


def _by_kind_name(kind: str, name: str) -> dict[str, Any]:
    return next(d for _, d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name)


def _kubernetes_definitions(version: str) -> Resource[Any]:
    """kubernetes-validate's strict definitions for ``version`` (the files it ships, read offline)."""
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    (versioned,) = [p for p in folder.glob(f"v{version}.*-local-strict")]
    return Resource.from_contents(json.loads((versioned / "_definitions.json").read_text()))


def _validate_rayjob(doc: dict[str, Any]) -> None:
    schema = json.loads((SCHEMAS / "rayjob-ray.io-v1.json").read_text())
    for version in (K8S_VERSION, K8S_LATEST):
        registry: Registry[Any] = _kubernetes_definitions(version) @ Registry()
        jsonschema.Draft202012Validator(schema, registry=registry).validate(doc)


def validate_k8s(doc: dict[str, Any]) -> None:
    """Validate one Kubernetes document: built-in kinds by kubernetes-validate, RayJob by our schema."""
    if doc["apiVersion"] == "ray.io/v1":
        _validate_rayjob(doc)
    else:
        for version in (K8S_VERSION, K8S_LATEST):
            kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize(("where", "doc"), DOCS, ids=[w for w, _ in DOCS])
def test_kubernetes_manifest_is_valid(where: str, doc: dict[str, Any]) -> None:
    validate_k8s(doc)


@pytest.mark.parametrize(("where", "doc"), DOCS, ids=[w for w, _ in DOCS])
def test_a_misspelt_field_is_caught(where: str, doc: dict[str, Any]) -> None:
    """The validators are not vacuous: an unknown field at the top of the spec (or data) is refused."""
    bad = copy.deepcopy(doc)
    section = "data" if doc["kind"] == "ConfigMap" else "spec"
    if doc["kind"] == "ConfigMap":
        bad[section]["config.yaml"] = 1  # ConfigMap data are strings
    else:
        bad[section]["replica"] = 2
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate_k8s(bad)


def test_pod_templates_inside_the_rayjob_are_checked() -> None:
    bad = copy.deepcopy(_by_kind_name("RayJob", "fencebox-evaluate"))
    container = bad["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    container["imagePullPolcy"] = "Always"
    with pytest.raises(jsonschema.ValidationError):
        _validate_rayjob(bad)


def _load_config(text: str, tmp_path: Path) -> Settings:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return load_settings(path)  # the loader `fencebox serve --config` uses


def test_configmap_points_at_the_redis_service(tmp_path: Path) -> None:
    settings = _load_config(_by_kind_name("ConfigMap", "fencebox-config")["data"]["config.yaml"], tmp_path)
    rl = settings.rate_limit
    assert rl.enabled and rl.backend == "redis" and rl.fail == "closed" and rl.redis_url
    url = urlsplit(rl.redis_url)
    service = _by_kind_name("Service", url.hostname or "")
    (port,) = [p for p in service["spec"]["ports"] if p["port"] == url.port]
    redis = _by_kind_name("Deployment", "redis")
    pod = redis["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    (container,) = pod["spec"]["containers"]
    assert port["targetPort"] in {p["name"] for p in container["ports"]}
    args = container["args"]
    assert args[args.index("--save") + 1] == "" and "--appendonly" in args  # documented: no persistence
    # the fencebox Deployment mounts this ConfigMap as its config file
    fencebox = _by_kind_name("Deployment", "fencebox")["spec"]["template"]["spec"]
    assert {"name": "config", "configMap": {"name": "fencebox-config"}} in fencebox["volumes"]


def _evaluate_options() -> set[str]:
    command = typer.main.get_command(cli_app)
    evaluate = command.commands["evaluate"]  # type: ignore[attr-defined]
    return {opt for p in evaluate.params for opt in p.opts}


def test_rayjob_runs_fencebox_evaluate_on_ray() -> None:
    job = _by_kind_name("RayJob", "fencebox-evaluate")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:3] == ["fencebox", "evaluate", "--ray"]
    # every other option is one `fencebox evaluate` has (--ray itself arrives with the Ray work)
    flags = [a for a in argv[3:] if a.startswith("-")]
    assert set(flags) <= _evaluate_options(), set(flags) - _evaluate_options()
    out = argv[argv.index("--out") + 1]
    cluster = job["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]
    (mount,) = head["containers"][0]["volumeMounts"]
    assert out.startswith(mount["mountPath"] + "/")  # reports and cache outlive the cluster
    (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
    claim = _by_kind_name("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    for group in cluster["workerGroupSpecs"]:  # what KubeRay's webhook checks
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    images = {c["image"] for c in head["containers"]}
    for group in cluster["workerGroupSpecs"]:
        images |= {c["image"] for c in group["template"]["spec"]["containers"]}
    assert len(images) == 1, "head and workers must run the same image (same Ray and fencebox)"


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    return doc


def _compose_validator() -> Iterator[jsonschema.ValidationError]:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    return jsonschema.Draft7Validator(schema).iter_errors(_compose())


def test_compose_file_follows_the_compose_spec() -> None:
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in _compose_validator()]
    assert not errors, errors


def test_compose_spec_catches_a_misspelt_field() -> None:
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text())
    bad = _compose()
    bad["services"]["redis"]["helthcheck"] = bad["services"]["redis"].pop("healthcheck")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(bad)


def test_compose_config_points_at_the_redis_service(tmp_path: Path) -> None:
    doc = _compose()
    settings = _load_config(doc["configs"]["fencebox-config"]["content"], tmp_path)
    rl = settings.rate_limit
    assert rl.enabled and rl.backend == "redis" and rl.redis_url
    url = urlsplit(rl.redis_url)
    redis = doc["services"][url.hostname or ""]
    assert str(url.port) in redis["expose"]
    assert doc["services"]["fencebox"]["depends_on"][url.hostname]["condition"] == "service_healthy"
