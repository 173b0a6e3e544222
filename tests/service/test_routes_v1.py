"""The REST endpoints on a real uvicorn server: purify, predict, policies, bad input, errors, metrics."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from PIL import Image

import fencebox
from tests.images import digit, encode_pil, png, png_claiming
from tests.service.servers import TinyNet, serve, tiny_settings


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    settings = tiny_settings(
        allow_chain_override=True, policy="label", limits={"max_body_bytes": 200_000, "max_pixels": 1_000_000}
    )
    settings.routes.append(
        settings.routes[0].model_copy(
            update={"name": "scores", "policy": "scores", "allow_chain_override": False}
        )
    )
    settings.routes.append(settings.routes[0].model_copy(update={"name": "rounded", "policy": "rounded"}))
    settings.routes.append(
        settings.routes[0].model_copy(update={"name": "top3", "policy": "topk", "topk": 3})
    )
    with serve(settings) as s:
        yield s.url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


def _expected_label(img: np.ndarray, chain: str = "bit_depth(bits=5)") -> int:
    batch = fencebox.load_chain(chain)(img[None, :, :, None], rng=0)
    return int(TinyNet().predict(batch)[0])


def test_predict_label_only_by_default(client: httpx.Client) -> None:
    img = digit(3)
    r = client.post("/v1/predict", content=png(img), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"model", "label", "class_name"}  # no scores unless the policy allows them
    assert body["label"] == _expected_label(img)
    assert body["class_name"] == f"c{body['label']}"
    assert r.headers["x-fencebox-chain"] == 'bit_depth(bits=5, mode="round")'
    timing = r.headers["server-timing"]
    for stage in ("decode", "chain", "queue", "model", "total"):
        assert f"{stage};dur=" in timing


def test_predict_policies(client: httpx.Client) -> None:
    data = png(digit(5))
    scores = client.post("/v1/predict?model=scores", content=data).json()["scores"]
    assert len(scores) == 10 and abs(sum(scores.values()) - 1) < 1e-5
    rounded = client.post("/v1/predict?model=rounded", content=data).json()["scores"]
    assert all(round(v, 2) == v for v in rounded.values())
    assert any(round(v, 6) != v for v in scores.values())  # full precision really is finer
    top = client.post("/v1/predict?model=top3", content=data).json()
    assert len(top["topk"]) == 3 and top["topk"][0]["label"] == top["label"] and "scores" not in top
    best = sorted(scores, key=lambda k: -scores[k])[:3]
    assert [t["class_name"] for t in top["topk"]] == best


def test_predict_multipart_and_octet_stream(client: httpx.Client) -> None:
    img = digit(7)
    r = client.post("/v1/predict", files={"file": ("d.png", png(img), "image/png")})
    assert r.status_code == 200, r.text
    r2 = client.post("/v1/predict", content=png(img), headers={"content-type": "application/octet-stream"})
    assert r.json()["label"] == r2.json()["label"] == _expected_label(img)


def test_predict_resizes_and_normalises_colour(client: httpx.Client) -> None:
    big = np.stack([np.kron(digit(2), np.ones((4, 4), np.uint8))] * 3, axis=-1)  # 112x112 RGB
    r = client.post("/v1/predict", content=encode_pil(Image.fromarray(big), "JPEG", quality=95))
    assert r.status_code == 200, r.text
    assert r.json()["label"] in range(10)


def test_purify_returns_png_and_echoes_chain(client: httpx.Client) -> None:
    img = (np.arange(32 * 40 * 3) % 251).astype(np.uint8).reshape(32, 40, 3)
    r = client.post("/v1/purify", content=png(img))
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    out = np.asarray(Image.open(io.BytesIO(r.content)))
    expected = fencebox.load_chain("bit_depth(bits=5)")(img[None], rng=0)[0]
    assert out.shape == img.shape and np.array_equal(out, expected)
    assert "chain;dur=" in r.headers["server-timing"] and "decode;dur=" in r.headers["server-timing"]


def test_purify_chain_override_and_format(client: httpx.Client) -> None:
    img = digit(1)
    r = client.post("/v1/purify", params={"chain": "bit_depth(bits=1)", "format": "bmp"}, content=png(img))
    assert r.status_code == 200 and r.headers["content-type"] == "image/bmp"
    out = np.asarray(Image.open(io.BytesIO(r.content)))
    assert set(np.unique(out)) <= {0, 255}
    assert r.headers["x-fencebox-chain"].startswith("bit_depth(bits=1")
    none = client.post("/v1/purify", params={"chain": "none"}, content=png(img))
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(none.content))), img)
    assert none.headers["x-fencebox-chain"] == "none"


def test_chain_override_refused_where_not_allowed(client: httpx.Client) -> None:
    r = client.post("/v1/purify", params={"model": "scores", "chain": "none"}, content=png(digit()))
    assert r.status_code == 403 and "allow_chain_override" in r.json()["error"]


def test_bad_chain_override_is_400(client: httpx.Client) -> None:
    r = client.post("/v1/purify", params={"chain": "no_such_transform(x=1)"}, content=png(digit()))
    assert r.status_code == 400 and "no_such_transform" in r.json()["error"]
    r = client.post("/v1/purify", params={"chain": "/etc/passwd.yaml"}, content=png(digit()))
    assert r.status_code == 400
    for spec in ("bit_depth(bits=1e400)", 'bit_depth(mode="\\q")', "bit_depth(bits=" + "[" * 1900 + ")"):
        r = client.post("/v1/purify", params={"chain": spec}, content=png(digit()))  # once HTTP 500
        assert r.status_code == 400 and r.json()["code"] == "bad_request", r.text


def test_unknown_model_is_404_listing_routes(client: httpx.Client) -> None:
    r = client.post("/v1/predict?model=nope", content=png(digit()))
    assert r.status_code == 404 and "tiny" in r.json()["error"]


@pytest.mark.parametrize(
    ("body", "ctype", "status", "words"),
    [
        (b"", "image/png", 400, "empty"),
        (b"this is not an image at all", "image/png", 400, "not a recognisable image"),
        (png(digit())[:60], "image/png", 400, "truncated"),
        (png_claiming(30000, 30000), "image/png", 413, "before decoding"),
        (png_claiming(2000, 2000), "image/png", 413, "pixels"),
        (b"\x00" * 300_000, "image/png", 413, "at most 200000 bytes"),
        (png(digit()), "application/json", 415, "not accepted"),
        (png(digit()), "text/plain", 415, "not accepted"),
        (encode_pil(Image.new("RGB", (8, 8)), "ICO"), "image/x-icon", 415, "ICO is not supported"),
        (encode_pil(Image.new("RGB", (8, 8)), "PPM"), "image/png", 415, "is not supported"),
    ],
    ids=[
        "empty",
        "garbage",
        "truncated",
        "bomb",
        "too-many-pixels",
        "oversize",
        "json",
        "text",
        "ico",
        "ppm",
    ],
)
@pytest.mark.parametrize("endpoint", ["/v1/predict", "/v1/purify"])
def test_bad_input(
    client: httpx.Client, endpoint: str, body: bytes, ctype: str, status: int, words: str
) -> None:
    r = client.post(endpoint, content=body, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert words in r.json()["error"]


def test_oversize_refused_while_streaming(client: httpx.Client) -> None:
    def gen() -> Iterator[bytes]:
        for _ in range(50):
            yield b"\x00" * 10_000

    r = client.post("/v1/predict", content=gen(), headers={"content-type": "image/png"})  # chunked: no length
    assert r.status_code == 413


def test_multipart_without_file_is_400(client: httpx.Client) -> None:
    r = client.post("/v1/predict", data={"note": "no file"}, files={})
    assert r.status_code in (400, 415)
    r = client.post(
        "/v1/predict", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}
    )
    assert r.status_code == 400, r.text


def test_json_errors_for_404_405_422(client: httpx.Client) -> None:
    r = client.get("/nowhere")
    assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = client.get("/v1/predict")
    assert r.status_code == 405 and r.json()["code"] == "method_not_allowed"
    r = client.post("/v1/purify?format=gif", content=png(digit()))
    assert r.status_code == 422 and "format" in r.json()["error"]


def test_models_listing(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()
    assert body["default"] == "tiny"
    assert {m["name"] for m in body["models"]} == {"tiny", "scores", "rounded", "top3"}
    assert body["models"][0]["input_shape"] == [28, 28, 1]


def test_metrics_count_requests_errors_stages_and_batches(client: httpx.Client) -> None:
    client.post("/v1/predict", content=png(digit()))
    client.post("/v1/predict", content=b"garbage")
    text = client.get("/metrics").text
    assert 'fencebox_requests_total{endpoint="/v1/predict",method="POST",status="200"}' in text
    assert 'fencebox_errors_total{endpoint="/v1/predict",error="bad_request"}' in text
    for stage in ("decode", "chain", "queue", "model"):
        assert f'fencebox_stage_seconds_count{{route="tiny",stage="{stage}"}}' in text
    assert 'fencebox_batch_size_count{route="tiny"}' in text
    assert 'fencebox_queue_depth{route="tiny"}' in text
    assert 'fencebox_request_seconds_bucket{endpoint="/v1/predict"' in text


def test_health_and_docs(client: httpx.Client) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/docs").status_code == 200
    schema = client.get("/openapi.json").json()
    assert {"/v1/purify", "/v1/predict", "/v2/models/{name}/infer", "/metrics"} <= set(schema["paths"])


def test_concurrent_requests_are_batched(server: str) -> None:
    import asyncio

    async def go() -> list[int]:
        async with httpx.AsyncClient(base_url=server, timeout=30) as c:
            data = [png(digit(i)) for i in range(24)]
            rs = await asyncio.gather(*(c.post("/v1/predict", content=d) for d in data))
            return [r.json()["label"] for r in rs]

    labels = asyncio.run(go())
    assert labels == [_expected_label(digit(i)) for i in range(24)]  # each answer goes to its own request
    text = httpx.get(server + "/metrics").text
    counts = {
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith('fencebox_batch_size_bucket{le="1.0",route="tiny"}')
    }
    total = [
        float(x.split()[-1])
        for x in text.splitlines()
        if x.startswith('fencebox_batch_size_count{route="tiny"}')
    ]
    assert counts and total and min(counts) < total[0]  # some model calls held more than one image


def test_fencebox_default_chain_route() -> None:
    with serve(tiny_settings(chain="fencebox-default")) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/predict", content=png(digit(2)))
        assert r.status_code == 200 and r.json()["label"] in range(10)
        assert r.headers["x-fencebox-chain"].startswith("jpeg(quality=75")
        img = np.stack([digit(1, 64)] * 3, axis=-1)
        out = c.post("/v1/purify", content=png(img))
        purified = np.asarray(Image.open(io.BytesIO(out.content)))
        assert purified.shape == img.shape and not np.array_equal(purified, img)


def _builtin_mnist_available() -> bool:
    try:
        from fencebox.models import load_model

        load_model("builtin:mnist")
    except Exception:
        return False
    return True


@pytest.mark.skipif(not _builtin_mnist_available(), reason="builtin:mnist weights are not built yet")
def test_default_configuration_serves_builtin_mnist() -> None:
    from fencebox.models import load_dataset
    from fencebox.service import load_settings

    settings = load_settings(threads=2)
    x, y = load_dataset("builtin:mnist-test")
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.get("/v1/models").json()["models"][0]["chain"].startswith("jpeg(quality=75")
        labels = [
            c.post("/v1/predict?model=mnist", content=png(x[i, :, :, 0])).json()["label"] for i in range(40)
        ]
    accuracy = float(np.mean(np.array(labels) == y[:40]))
    assert accuracy >= 0.85, accuracy  # the built-in model behind fencebox-default still reads digits
