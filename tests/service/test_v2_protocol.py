"""The Open Inference Protocol v2 endpoints, exercised with the official tritonclient.http client."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as th
from tritonclient.utils import InferenceServerException

import fencebox
from tests.images import digit
from tests.service.servers import TinyNet, serve, tiny_settings


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    settings = tiny_settings(limits={"max_images": 8})
    settings.routes.append(settings.routes[0].model_copy(update={"name": "scored", "policy": "scores"}))
    settings.routes.append(
        settings.routes[0].model_copy(update={"name": "top2", "policy": "topk", "topk": 2})
    )
    settings.routes.append(settings.routes[0].model_copy(update={"name": "raw", "chain": "none"}))
    with serve(settings) as s:
        yield s.url


@pytest.fixture(scope="module")
def triton(server: str) -> Iterator[th.InferenceServerClient]:
    c = th.InferenceServerClient(server.removeprefix("http://"))
    yield c
    c.close()


def _batch(n: int = 4) -> np.ndarray:
    return np.stack([digit(i) for i in range(n)])[..., None]


def _expected(x: np.ndarray) -> np.ndarray:
    return TinyNet().predict(fencebox.load_chain("bit_depth(bits=5)")(x, rng=0))


def test_server_and_model_metadata(triton: th.InferenceServerClient) -> None:
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("tiny")
    assert triton.get_server_metadata()["extensions"] == ["binary_tensor_data", "model_repository"]
    meta = triton.get_model_metadata("tiny")
    assert meta["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": [-1, 28, 28, 1]}]
    assert [o["name"] for o in meta["outputs"]] == ["label"]  # no scores under the default policy
    scored = triton.get_model_metadata("scored")
    assert scored["outputs"][1] == {"name": "scores", "datatype": "FP32", "shape": [-1, 10]}


@pytest.mark.parametrize("binary", [True, False])
def test_uint8_infer(triton: th.InferenceServerClient, binary: bool) -> None:
    x = _batch()
    inp = th.InferInput("input", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = th.InferRequestedOutput("label", binary_data=binary)
    res = triton.infer("tiny", [inp], outputs=[out], request_id="req-1")
    assert np.array_equal(res.as_numpy("label"), _expected(x))
    assert res.get_response()["id"] == "req-1"


@pytest.mark.parametrize("binary", [True, False])
def test_fp32_infer_with_scores(triton: th.InferenceServerClient, binary: bool) -> None:
    x = _batch(3)
    inp = th.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy((x / 255.0).astype(np.float32), binary_data=binary)
    res = triton.infer("scored", [inp])  # no outputs named: all, as binary
    labels, scores = res.as_numpy("label"), res.as_numpy("scores")
    assert np.array_equal(labels, _expected(x))
    assert scores.shape == (3, 10) and np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    assert np.array_equal(scores.argmax(axis=1), labels)


def test_topk_output(triton: th.InferenceServerClient) -> None:
    x = _batch(2)
    inp = th.InferInput("input", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    res = triton.infer("top2", [inp])
    assert res.as_numpy("topk").shape == (2, 2)
    assert np.array_equal(res.as_numpy("topk")[:, 0], res.as_numpy("label"))
    assert res.as_numpy("scores") is None


@pytest.mark.parametrize(
    ("name", "shape", "dtype", "words"),
    [
        ("input", [2, 28, 28, 3], "UINT8", "shape [2, 28, 28, 3]"),
        ("input", [2, 28, 28], "UINT8", "shape [2, 28, 28]"),
        ("input", [2, 28, 28, 1], "INT32", "datatype INT32"),
        ("image", [2, 28, 28, 1], "UINT8", "got inputs ['image']"),
        ("input", [9, 28, 28, 1], "UINT8", "at most 8"),
    ],
)
def test_wrong_signature_is_400_with_expected_signature(
    triton: th.InferenceServerClient, name: str, shape: list[int], dtype: str, words: str
) -> None:
    np_dtype = {"UINT8": np.uint8, "INT32": np.int32}[dtype]
    inp = th.InferInput(name, shape, dtype)
    inp.set_data_from_numpy(np.zeros(shape, np_dtype))
    with pytest.raises(InferenceServerException) as err:
        triton.infer("tiny", [inp])
    assert err.value.status() == "400"
    assert words in err.value.message()
    assert (
        "expected one input 'input', datatype UINT8 (or FP32 in [0, 1]), shape [-1, 28, 28, 1]"
        in err.value.message()
    )


def test_unknown_model_and_output(triton: th.InferenceServerClient) -> None:
    x = _batch(1)
    inp = th.InferInput("input", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as err:
        triton.infer("nope", [inp])
    assert err.value.status() == "404"
    with pytest.raises(InferenceServerException) as err:
        triton.infer("tiny", [inp], outputs=[th.InferRequestedOutput("scores")])
    assert err.value.status() == "400" and "not available" in err.value.message()


@pytest.mark.parametrize(
    ("body", "headers", "words"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b"[]", {}, "JSON object"),
        (b'{"inputs": []}', {}, "non-empty 'inputs'"),
        (
            b'{"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 28, 28, 1], "data": [1, 2]}]}',
            {},
            "needs 784",
        ),
        (
            b'{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": '
            + b"["
            + b'"x",' * 783
            + b'"x"]}]}',
            {},
            "FP32",
        ),
        (b'{"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, -2]}]}', {}, "negative"),
        (
            b'{"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 28, 28, 1], '
            b'"parameters": {"binary_data_size": 784}}]}',
            {"inference-header-content-length": "118"},
            "past the end",
        ),
        (b"{}", {"inference-header-content-length": "abc"}, "must be an integer"),
        (b"{}", {"inference-header-content-length": "99"}, "does not fit"),
        (b"[" * 100_000, {}, "nested too deeply"),  # was RecursionError: HTTP 500
        (  # was silently truncated to 1
            b'{"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 28, 28, 1], "data": '
            + b"["
            + b"0," * 783
            + b"1.7]}]}",
            {},
            "UINT8",
        ),
        (
            b'{"inputs": [{"name": "input", "datatype": "UINT8", "shape": [1, 28, 28, 1], "data": '
            + b"["
            + b"0," * 783
            + b"300]}]}",
            {},
            "[0, 255]",
        ),
    ],
)
def test_malformed_v2_requests_are_400(server: str, body: bytes, headers: dict[str, str], words: str) -> None:
    r = httpx.post(f"{server}/v2/models/tiny/infer", content=body, headers=headers)
    assert r.status_code == 400, r.text
    assert words in r.json()["error"]
    assert "expected one input 'input'" in r.json()["error"]


def test_fp32_out_of_range_is_400(server: str) -> None:
    doc = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 28, 28, 1], "data": [2.0] * 784}]}
    r = httpx.post(f"{server}/v2/models/tiny/infer", content=json.dumps(doc))
    assert r.status_code == 400 and "[0, 1]" in r.json()["error"]


def test_json_nested_data_answers_json(server: str) -> None:
    x = _batch(2)
    doc = {"inputs": [{"name": "input", "datatype": "UINT8", "shape": [2, 28, 28, 1], "data": x.tolist()}]}
    r = httpx.post(f"{server}/v2/models/tiny/infer", json=doc)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    out = r.json()["outputs"]
    assert out[0]["name"] == "label" and out[0]["data"] == _expected(x).tolist()
    assert "chain;dur=" in r.headers["server-timing"] and "model;dur=" in r.headers["server-timing"]


def test_chain_none_passes_images_untouched(triton: th.InferenceServerClient) -> None:
    x = np.random.default_rng(1).integers(0, 256, (5, 28, 28, 1), dtype=np.uint8)
    inp = th.InferInput("input", list(x.shape), "UINT8")
    inp.set_data_from_numpy(x)
    assert np.array_equal(triton.infer("raw", [inp]).as_numpy("label"), TinyNet().predict(x))
    assert triton.get_model_metadata("raw")["parameters"]["chain"] == "none"
