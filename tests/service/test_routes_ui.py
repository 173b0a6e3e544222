"""The playground's and report viewer's API on a real uvicorn server: validate, stages, reports, keys."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

import fencebox
from tests.images import digit, png
from tests.service.servers import ROOT, TinyNet, serve, tiny_settings

KEY = "ui-test-key"


def _report(path: Path) -> None:
    path.write_text(json.dumps({"schema": "fencebox.harness.report/1", "results": [], "checks": []}))


@pytest.fixture(scope="module")
def reports_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("reports")
    (d / "run-a").mkdir()
    _report(d / "run-a" / "report.json")
    _report(d / "flat.json")
    (d / "notes.txt").write_text("not a report")
    (d / "broken.json").write_text("{not json")
    outside = tmp_path_factory.mktemp("outside")
    _report(outside / "secret.json")
    (d / "escape.json").symlink_to(outside / "secret.json")  # a link out of the folder is not a report
    return d


@pytest.fixture(scope="module")
def server(reports_dir: Path) -> Iterator[str]:
    settings = tiny_settings(allow_chain_override=True, _top={"reports_dir": reports_dir})
    base = settings.routes[0]
    settings.routes.append(base.model_copy(update={"name": "locked", "allow_chain_override": False}))
    settings.routes.append(base.model_copy(update={"name": "scores", "policy": "scores"}))
    settings.routes.append(
        base.model_copy(
            update={"name": "small", "limits": base.limits.model_copy(update={"max_body_bytes": 1500})}
        )
    )
    with serve(settings) as s:
        yield s.url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


def _image(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def test_pages_and_samples_are_served(client: httpx.Client) -> None:
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == "/ui"
    for path, kind in (("/ui", "text/html"), ("/ui/reports", "text/html"), ("/ui/static/ui.css", "text/css")):
        r = client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
        assert "default-src 'self'" in r.headers["content-security-policy"]
    html = client.get("/ui").text
    assert "http://" not in html and "https://" not in html  # no CDN, nothing off this server
    samples = client.get("/ui/samples").json()["samples"]
    assert {"digit.png", "photo.jpg"} <= set(samples)
    for name in samples:
        r = client.get(f"/ui/samples/{name}")
        assert r.status_code == 200
        assert r.content == (ROOT / "examples" / name).read_bytes()  # the package ships the README's samples


@pytest.mark.parametrize(
    "path", ["/ui/static/..%2Fapp.py", "/ui/static/routes_ui.py", "/ui/samples/..%2F__init__.py"]
)
def test_static_files_only_from_the_shipped_list(client: httpx.Client, path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_validate_answers_the_normalised_spec(client: httpx.Client) -> None:
    r = client.post("/v1/chains/validate", json={"spec": "jpeg(quality=75)|bit_depth(bits=5)"})
    body = r.json()
    assert r.status_code == 200 and body["valid"] is True
    assert body["spec"] == str(fencebox.load_chain("jpeg(quality=75) | bit_depth(bits=5)"))
    assert body["stages"] == [str(t) for t in fencebox.load_chain(body["spec"])]
    assert body["randomized"] is False
    assert client.post("/v1/chains/validate", json={"spec": "xie2018"}).json()["randomized"] is True


@pytest.mark.parametrize(
    ("spec", "position", "words"),
    [
        ("jpeg(quality=75 | bit_depth(bits=5)", 16, "expected ')'"),
        ("jpeg(quality=75) | bitdepth(bits=5)", 19, "did you mean 'bit_depth'"),
        ("/etc/passwd.yaml", 0, "unexpected character"),  # never read as a file
    ],
)
def test_validate_reports_the_error_and_its_position(
    client: httpx.Client, spec: str, position: int, words: str
) -> None:
    body = client.post("/v1/chains/validate", json={"spec": spec}).json()
    assert body["valid"] is False and body["position"] == position and words in body["error"]


def test_validate_checks_the_route_input(client: httpx.Client) -> None:
    ok = client.post("/v1/chains/validate", json={"spec": "median(size=3)", "model": "tiny"}).json()
    assert ok["valid"] is True
    r = client.post("/v1/chains/validate", json={"spec": "median(size=3)", "model": "nope"})
    assert r.status_code == 404


def test_presets_list_every_preset(client: httpx.Client) -> None:
    names = [p["name"] for p in client.get("/v1/chains/presets").json()["presets"]]
    assert names == fencebox.presets.list_presets()


def test_stages_show_every_stage_and_the_label(client: httpx.Client) -> None:
    img = digit(4)
    chain = "bit_depth(bits=3) | median(size=3) | jpeg(quality=50)"
    r = client.post(f"/v1/purify?stages=true&chain={chain}&seed=1", content=png(img))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [s["name"] for s in body["stages"]] == ["bit_depth", "median", "jpeg"]
    expected = fencebox.load_chain(chain).run(img[None, :, :, None], 1)
    assert np.array_equal(_image(body["purified"]["image"]), expected[0, :, :, 0])
    assert np.array_equal(_image(body["original"]["image"]), img)
    assert body["answer"] == {
        "label": int(TinyNet().predict(expected)[0]),
        "class_name": body["answer"]["class_name"],
    }
    assert set(body["answer"]) == {"label", "class_name"}  # policy label: no scores
    assert body["heatmap"]["max_difference"] == int(np.abs(expected[0].astype(int) - img[:, :, None]).max())
    assert all(s["seconds"] >= 0 for s in body["stages"])
    assert r.headers["x-fencebox-chain"] == str(fencebox.load_chain(chain))


def test_stages_answer_only_what_the_policy_allows(client: httpx.Client) -> None:
    data = png(digit(2))
    scored = client.post("/v1/purify?stages=true&model=scores", content=data).json()["answer"]
    plain = client.post("/v1/predict?model=scores", content=data).json()
    plain.pop("model")
    assert set(scored) == set(plain) == {"label", "class_name", "scores"}


def test_seed_draws_the_same_and_only_where_overrides_are_allowed(client: httpx.Client) -> None:
    data = png(digit(6))
    chain = "choice(k=1, transforms=[median(size=3), jpeg(quality=30), bit_depth(bits=2)])"
    runs = [
        client.post(f"/v1/purify?stages=true&chain={chain}&seed={s}", content=data).json() for s in (5, 5)
    ]
    same = [[{k: v for k, v in st.items() if k != "seconds"} for st in run["stages"]] for run in runs]
    assert same[0] == same[1]
    assert runs[0]["stages"][0]["drawn"]["picked"][0] in [
        str(t) for t in fencebox.load_chain(chain)[0].children
    ]
    r = client.post("/v1/purify?stages=true&model=locked&seed=5", content=data)
    assert r.status_code == 403 and "seed" in r.json()["error"]
    r = client.post("/v1/purify?seed=5", content=data)
    assert r.status_code == 400
    r = client.post("/v1/purify?stages=true&model=locked&chain=none", content=data)
    assert r.status_code == 403


def test_stages_stay_within_the_route_output_limit(client: httpx.Client) -> None:
    rng = np.random.default_rng(0)
    noisy = rng.integers(0, 256, (28, 28), dtype=np.uint8)  # incompressible: each stage PNG ~ 1 kB
    r = client.post(
        "/v1/purify?stages=true&model=small&chain=bit_depth(bits=7)|bit_depth(bits=6)", content=png(noisy)
    )
    assert r.status_code == 413 and "stage images" in r.json()["error"]


def test_reports_by_name_only(client: httpx.Client, reports_dir: Path) -> None:
    assert client.get("/v1/reports").json() == {
        "configured": True,
        "reports": ["broken.json", "flat.json", "run-a"],
    }
    r = client.get("/v1/reports/run-a")
    assert r.status_code == 200 and r.json()["schema"] == "fencebox.harness.report/1"
    assert client.get("/v1/reports/flat.json").status_code == 200
    assert client.get("/v1/reports/broken.json").status_code == 400
    assert client.get("/v1/reports/run-a/examples").json()["examples"] == []


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "%2e%2e",
        "..%2F..%2Fpyproject.toml",
        "%2Fetc%2Fpasswd",
        "run-a%2Freport.json",
        "escape.json",
        "notes.txt",
        "run-a%00",
        ".hidden",
        "run-a%5C..%5Cflat.json",
        "~",
    ],
)
def test_report_traversal_is_refused(client: httpx.Client, name: str) -> None:
    r = client.get(f"/v1/reports/{name}")
    assert 400 <= r.status_code < 500, r.text
    assert "secret" not in r.text and "fencebox.harness.report" not in r.text


def test_saved_examples_reach_the_page(client: httpx.Client, reports_dir: Path) -> None:
    clean = np.stack([digit(i) for i in range(3)])
    adv = clean ^ 1
    np.savez(
        reports_dir / "run-a" / "adversarials.npz",
        clean=clean,
        adversarial=adv,
        label=np.array([1, 2, 3]),
        pred_adversarial=np.array([7, 7, 7]),
        threat=np.array(["bpda", "eot", "bpda"]),
    )
    try:
        body = client.get("/v1/reports/run-a/examples").json()
    finally:
        (reports_dir / "run-a" / "adversarials.npz").unlink()
    assert body["total"] == 3 and len(body["examples"]) == 3
    ex = body["examples"][1]
    assert ex["label"] == 2 and ex["threat"] == "eot" and ex["adversarial"]["prediction"] == 7
    assert ex["clean"]["prediction"] is None and ex["purified"] is None
    assert np.array_equal(_image(ex["adversarial"]["image"]), adv[1])


def test_the_harness_layout_of_saved_adversarials(client: httpx.Client, reports_dir: Path) -> None:
    from fencebox.models import load_dataset, load_model

    x, y = load_dataset("builtin:mnist-test")
    index = np.array([3, 1, 4])
    adv = np.clip(x[index].astype(int) + 60, 0, 255).astype(np.uint8)
    run = reports_dir / "harness-run"
    (run / "adversarials").mkdir(parents=True)
    np.savez_compressed(run / "adversarials" / "000-linf-0.3.npz", images=adv, labels=y[index], index=index)
    row = {
        "chain": "bits",
        "chain_spec": "bit_depth(bits=1)",
        "threat": "worst-case",
        "norm": "linf",
        "eps": 0.3,
    }
    outside = {**row, "verdict": {"adversarials": {"file": "../run-a/report.json"}}}
    doc = {
        "config": {"model": "builtin:mnist", "data": "builtin:mnist-test"},
        "results": [{**row, "verdict": {"adversarials": {"file": "adversarials/000-linf-0.3.npz"}}}, outside],
    }
    (run / "report.json").write_text(json.dumps(doc))
    body = client.get("/v1/reports/harness-run/examples").json()
    assert body["total"] == 3 and len(body["examples"]) == 3
    model = load_model("builtin:mnist")
    purified = fencebox.load_chain("bit_depth(bits=1)").run(adv, 0)
    for ex in body["examples"]:
        k = int(np.flatnonzero(index == ex["index"])[0])
        assert ex["label"] == int(y[index[k]])
        assert np.array_equal(_image(ex["clean"]["image"]), x[index[k], :, :, 0])
        assert np.array_equal(_image(ex["adversarial"]["image"]), adv[k, :, :, 0])
        assert ex["adversarial"]["prediction"] == int(model.predict(adv[k : k + 1])[0])
        assert ex["purified"]["prediction"] == int(model.predict(purified[k : k + 1])[0])
    broken = [ex["purified"]["prediction"] != ex["label"] for ex in body["examples"]]
    assert broken == sorted(broken, reverse=True)  # broken examples first


def test_no_reports_dir_means_no_reports() -> None:
    with serve(tiny_settings()) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.get("/v1/reports").json() == {"configured": False, "reports": []}
        r = c.get("/v1/reports/mnist")
        assert r.status_code == 404 and "reports_dir" in r.json()["error"]


def test_api_calls_need_the_key_and_pages_do_not(tmp_path: Path) -> None:
    settings = tiny_settings(allow_chain_override=True, _top={"api_keys": [KEY], "reports_dir": tmp_path})
    pages = ("/ui", "/ui/reports", "/ui/static/playground.js", "/ui/samples", "/ui/samples/digit.png")
    calls = [
        ("POST", "/v1/chains/validate", {"json": {"spec": "median(size=3)"}}),
        ("GET", "/v1/chains/presets", {}),
        ("GET", "/v1/reports", {}),
        ("GET", "/v1/reports/x", {}),
        ("GET", "/v1/reports/x/examples", {}),
        ("POST", "/v1/purify?stages=true", {"content": png(digit(1))}),
    ]
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        for path in pages:
            assert c.get(path).status_code == 200, path
        for method, path, kw in calls:
            r = c.request(method, path, **kw)  # type: ignore[arg-type]
            assert r.status_code == 401, (path, r.text)
            ok = c.request(method, path, headers={"Authorization": f"Bearer {KEY}"}, **kw)  # type: ignore[arg-type]
            assert ok.status_code != 401, path
