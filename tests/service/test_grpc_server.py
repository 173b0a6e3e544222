"""The gRPC Open Inference Protocol server, exercised unchanged with the official tritonclient.grpc
client (and, for requests that client refuses to build, with the raw stubs it ships)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
import tritonclient.http as th
from hypothesis import given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc
from tritonclient.utils import InferenceServerException

import fencebox
from fencebox.errors import ConfigError
from fencebox.service import load_settings
from fencebox.service.grpc_server import GrpcServer, _peer_host
from fencebox.service.runtime import Runtime
from tests.images import digit
from tests.service.servers import ServerThread, TinyNet, free_port, serve, tiny_settings


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    settings = tiny_settings(limits={"max_images": 8}, _top={"grpc_port": free_port()})
    settings.routes.append(settings.routes[0].model_copy(update={"name": "scored", "policy": "scores"}))
    settings.routes.append(
        settings.routes[0].model_copy(update={"name": "top2", "policy": "topk", "topk": 2})
    )
    with serve(settings) as s:
        yield s


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[tg.InferenceServerClient]:
    c = tg.InferenceServerClient(f"127.0.0.1:{server.app.state.grpc_port}")
    yield c
    c.close()


@pytest.fixture(scope="module")
def stub(server: ServerThread) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{server.app.state.grpc_port}") as ch:
        yield pb_grpc.GRPCInferenceServiceStub(ch)


def _batch(n: int = 4) -> np.ndarray:
    return np.stack([digit(i) for i in range(n)])[..., None]


def _expected(x: np.ndarray) -> np.ndarray:
    return TinyNet().predict(fencebox.load_chain("bit_depth(bits=5)")(x, rng=0))


def _input(x: np.ndarray, name: str = "input", dtype: str = "UINT8") -> tg.InferInput:
    inp = tg.InferInput(name, list(x.shape), dtype)
    inp.set_data_from_numpy(x)
    return inp


def _status(err: pytest.ExceptionInfo[InferenceServerException]) -> str:
    return str(err.value.status())


def test_health_metadata_and_repository_index(client: tg.InferenceServerClient) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("tiny")
    meta = client.get_server_metadata(as_json=True)
    assert meta["name"] == "fencebox" and "model_repository" in meta["extensions"]
    tiny = client.get_model_metadata("tiny", as_json=True)
    assert tiny["inputs"] == [{"name": "input", "datatype": "UINT8", "shape": ["-1", "28", "28", "1"]}]
    assert [o["name"] for o in tiny["outputs"]] == ["label"]
    scored = client.get_model_metadata("scored", as_json=True)
    assert scored["outputs"][1] == {"name": "scores", "datatype": "FP32", "shape": ["-1", "10"]}
    index = client.get_model_repository_index(as_json=True)["models"]
    assert [(m["name"], m["state"]) for m in index] == [
        ("tiny", "READY"),
        ("scored", "READY"),
        ("top2", "READY"),
    ]


def test_unknown_model_is_not_found(client: tg.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as err:
        client.infer("nope", [_input(_batch(1))])
    assert _status(err) == "StatusCode.NOT_FOUND" and "routes: tiny, scored, top2" in err.value.message()
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("nope")
    assert _status(err) == "StatusCode.NOT_FOUND"


def test_uint8_infer_matches_http_and_the_model(
    server: ServerThread, client: tg.InferenceServerClient
) -> None:
    x = _batch(5)
    res = client.infer("tiny", [_input(x)], request_id="req-7")
    assert np.array_equal(res.as_numpy("label"), _expected(x))
    assert res.get_response().id == "req-7"
    # the same request over REST gives the same labels (one data plane)
    h = th.InferenceServerClient(server.url.removeprefix("http://"))
    hi = th.InferInput("input", list(x.shape), "UINT8")
    hi.set_data_from_numpy(x)
    assert np.array_equal(h.infer("tiny", [hi]).as_numpy("label"), res.as_numpy("label"))
    h.close()


def test_fp32_scores_and_topk_follow_the_policy(client: tg.InferenceServerClient) -> None:
    x = _batch(3)
    res = client.infer("scored", [_input((x / 255.0).astype(np.float32), dtype="FP32")])
    labels, scores = res.as_numpy("label"), res.as_numpy("scores")
    assert np.array_equal(labels, _expected(x))
    assert scores.shape == (3, 10) and np.allclose(scores.sum(axis=1), 1, atol=1e-5)
    top = client.infer("top2", [_input(x)], outputs=[tg.InferRequestedOutput("topk")])
    assert top.as_numpy("topk").shape == (3, 2) and top.as_numpy("label") is None
    with pytest.raises(InferenceServerException) as err:
        client.infer("tiny", [_input(x)], outputs=[tg.InferRequestedOutput("scores")])
    assert _status(err) == "StatusCode.INVALID_ARGUMENT" and "not available" in err.value.message()


@pytest.mark.parametrize(
    ("name", "x", "dtype", "words"),
    [
        ("input", np.zeros((2, 28, 28, 3), np.uint8), "UINT8", "shape [2, 28, 28, 3]"),
        ("input", np.zeros((2, 28, 28, 1), np.int32), "INT32", "datatype INT32"),
        ("image", np.zeros((2, 28, 28, 1), np.uint8), "UINT8", "got inputs ['image']"),
        ("input", np.zeros((9, 28, 28, 1), np.uint8), "UINT8", "at most 8"),
        ("input", np.full((1, 28, 28, 1), 2.0, np.float32), "FP32", "[0, 1]"),
    ],
)
def test_wrong_signature_is_invalid_argument(
    client: tg.InferenceServerClient, name: str, x: np.ndarray, dtype: str, words: str
) -> None:
    with pytest.raises(InferenceServerException) as err:
        client.infer("tiny", [_input(x, name, dtype)])
    assert _status(err) == "StatusCode.INVALID_ARGUMENT"
    assert words in err.value.message()
    assert "expected one input 'input', datatype UINT8" in err.value.message()


def _raw_request(shape: list[int], raw: bytes | None, dtype: str = "UINT8") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="tiny")
    req.inputs.add(name="input", datatype=dtype, shape=shape)
    if raw is not None:
        req.raw_input_contents.append(raw)
    return req


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (_raw_request([1, 28, 28, 1], b"\0" * 10), "needs 784"),
        (_raw_request([1, 28, 28, 1], None), "contents hold 0 values"),
        (_raw_request([1, -28, 28, 1], b""), "negative"),
        (_raw_request([1, 28, 28, 1], b"", dtype="BYTES"), "not supported"),
        (pb.ModelInferRequest(model_name="tiny"), "no inputs"),
    ],
)
def test_malformed_requests_are_invalid_argument(
    stub: pb_grpc.GRPCInferenceServiceStub, request_: pb.ModelInferRequest, words: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request_, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert words in str(err.value.details())


def test_typed_contents_are_accepted_and_range_checked(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    x = _batch(2)
    req = pb.ModelInferRequest(model_name="tiny")
    req.inputs.add(name="input", datatype="UINT8", shape=list(x.shape))
    req.inputs[0].contents.uint_contents.extend(x.reshape(-1).tolist())
    res = stub.ModelInfer(req, timeout=30)
    assert np.frombuffer(res.raw_output_contents[0], np.int64).tolist() == _expected(x).tolist()
    req.inputs[0].contents.uint_contents[0] = 300
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(req, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "[0, 255]" in str(err.value.details())


_DTYPES = ["UINT8", "FP32", "INT64", "FP16", "BOOL", "BYTES", "INT8", "UINT64"]


@settings(max_examples=40)
@given(
    name=st.sampled_from(["input", "x", ""]),
    dtype=st.sampled_from(_DTYPES),
    shape=st.lists(st.integers(-2, 30), min_size=0, max_size=5),
    raw=st.one_of(st.none(), st.binary(max_size=3000)),
    extra_raw=st.booleans(),
    model=st.sampled_from(["tiny", "scored", "", "missing"]),
)
def test_any_request_gets_a_clear_status_never_internal(
    stub: pb_grpc.GRPCInferenceServiceStub,
    name: str,
    dtype: str,
    shape: list[int],
    raw: bytes | None,
    extra_raw: bool,
    model: str,
) -> None:
    req = pb.ModelInferRequest(model_name=model)
    req.inputs.add(name=name, datatype=dtype, shape=shape)
    if raw is not None:
        req.raw_input_contents.append(raw)
        if extra_raw:
            req.raw_input_contents.append(raw)
    try:
        stub.ModelInfer(req, timeout=30)
    except grpc.RpcError as err:
        assert err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), err.details()
        assert err.details()


def test_grpc_calls_are_counted_in_metrics(server: ServerThread, client: tg.InferenceServerClient) -> None:
    client.infer("tiny", [_input(_batch(1))])
    with pytest.raises(InferenceServerException):
        client.infer("nope", [_input(_batch(1))])
    text = httpx.get(f"{server.url}/metrics").text
    endpoint = "grpc:/inference.GRPCInferenceService/ModelInfer"
    assert f'fencebox_requests_total{{endpoint="{endpoint}",method="grpc",status="OK"}}' in text
    assert f'fencebox_errors_total{{endpoint="{endpoint}",error="not_found"}}' in text


def test_keys_and_budget_are_shared_with_http() -> None:
    top = {
        "grpc_port": free_port(),
        "api_keys": ["k1"],
        "rate_limit": {"enabled": True, "rate_per_s": 0.01, "burst": 3},
    }
    with serve(tiny_settings(_top=top)) as s:
        c = tg.InferenceServerClient(f"127.0.0.1:{s.app.state.grpc_port}")
        x = _batch(1)
        for headers, words in (({}, "API key is required"), ({"x-api-key": "nope"}, "not valid")):
            with pytest.raises(InferenceServerException) as err:
                c.infer("tiny", [_input(x)], headers=headers)
            assert _status(err) == "StatusCode.UNAUTHENTICATED" and words in err.value.message()
        with pytest.raises(InferenceServerException) as err:
            c.get_model_repository_index()
        assert _status(err) == "StatusCode.UNAUTHENTICATED"
        assert (
            c.infer("tiny", [_input(x)], headers={"authorization": "Bearer k1"}).as_numpy("label") is not None
        )
        assert c.infer("tiny", [_input(x)], headers={"x-api-key": "k1"}).as_numpy("label") is not None
        # one more query over HTTP spends the same budget (burst 3)...
        r = httpx.post(
            f"{s.url}/v2/models/tiny/infer",
            json={
                "inputs": [
                    {
                        "name": "input",
                        "datatype": "UINT8",
                        "shape": [1, 28, 28, 1],
                        "data": x.reshape(-1).tolist(),
                    }
                ]
            },
            headers={"x-api-key": "k1"},
        )
        assert r.status_code == 200, r.text
        # ...so the next gRPC call is refused for the budget, with a retry hint
        with pytest.raises(InferenceServerException) as err:
            c.infer("tiny", [_input(x)], headers={"x-api-key": "k1"})
        assert (
            _status(err) == "StatusCode.RESOURCE_EXHAUSTED"
            and "query budget exhausted" in err.value.message()
        )
        c.close()


def test_no_grpc_port_no_grpc_server() -> None:
    with serve(tiny_settings()) as s:
        assert not hasattr(s.app.state, "grpc_port")


@pytest.mark.parametrize(
    ("peer", "host"),
    [("ipv4:127.0.0.1:5000", "127.0.0.1"), ("ipv6:[::1]:5000", "::1"), ("unix:/tmp/s", "/tmp/s")],
)
def test_peer_host(peer: str, host: str) -> None:
    assert _peer_host(peer) == host


def test_deadlines_map_to_deadline_exceeded_and_the_server_carries_on() -> None:
    settings = tiny_settings(
        backend={"kind": "local", "model": "py:tests.service.servers:slow_model"},
        limits={"timeout_s": 0.1},
        _top={"grpc_port": free_port()},
    )
    with serve(settings) as s:
        c = tg.InferenceServerClient(f"127.0.0.1:{s.app.state.grpc_port}")
        with pytest.raises(InferenceServerException) as err:  # the route's own deadline (0.3 s model)
            c.infer("tiny", [_input(_batch(1))])
        assert (
            _status(err) == "StatusCode.DEADLINE_EXCEEDED"
            and "did not answer within 0.1 s" in err.value.message()
        )
        with pytest.raises(InferenceServerException) as err:  # the client's deadline
            c.infer("tiny", [_input(_batch(1))], client_timeout=0.05)
        assert _status(err) == "StatusCode.DEADLINE_EXCEEDED"
        assert c.is_server_live() and c.is_model_ready("tiny")
        text = httpx.get(f"{s.url}/metrics").text
        assert 'endpoint="grpc:/inference.GRPCInferenceService/ModelInfer",error="timeout"' in text
        c.close()


def test_grpc_port_in_use_is_a_clear_config_error() -> None:
    settings = tiny_settings()
    with socket.socket() as taken:  # held by a listener that would share it (as another gRPC server would)
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runtime = Runtime(settings)
        try:
            with pytest.raises(ConfigError, match=f"cannot serve gRPC on 127.0.0.1:{port}"):
                asyncio.run(GrpcServer(runtime, "127.0.0.1", port).start())
        finally:
            asyncio.run(runtime.close())


def test_grpc_port_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FENCEBOX_GRPC_PORT", "9555")
    assert load_settings().grpc_port == 9555
    assert load_settings(grpc_port=9556).grpc_port == 9556
    monkeypatch.delenv("FENCEBOX_GRPC_PORT")
    assert load_settings().grpc_port is None
