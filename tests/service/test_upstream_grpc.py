"""The gRPC upstream backend against KServe's real ModelServer with gRPC on (a subprocess on loopback,
serving builtin:mnist), and against deliberately broken gRPC V2 servers: down -> 502, slow -> 504,
error status or bad answer -> 502, recovery after a restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tg
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from fencebox.service.settings import BackendConfig
from tests.images import digit, png
from tests.service.helpers import mnist_expected, mnist_kserve, upstream_route
from tests.service.servers import KServeProcess, free_port, serve, tiny_settings


@pytest.fixture(scope="module")
def kserve() -> Iterator[KServeProcess]:
    """One KServe server (HTTP and gRPC) for the module, started lazily by the first test (which sees it down)."""
    yield from mnist_kserve(grpc=True)


def _route(target: str, model: str = "mnist", **backend: Any) -> dict[str, Any]:
    return upstream_route(target, model, protocol="grpc", **backend)


def test_down_then_recovers(kserve: KServeProcess) -> None:
    settings = tiny_settings(**_route(kserve.grpc_target, timeout_s=5))
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/predict", content=png(digit()))
        assert r.status_code == 502 and "unreachable" in r.json()["error"], r.text
        assert kserve.grpc_target.split(":")[-1] not in r.json()["error"], (
            "the upstream address must stay in the log"
        )
        assert c.get("/v2/health/ready").status_code == 503
        assert 'fencebox_upstream_errors_total{kind="down",route="up"} 1.0' in c.get("/metrics").text
        kserve.start()
        r = c.post("/v1/predict", content=png(digit(4)))
        assert r.status_code == 200, r.text
        assert r.json()["label"] == mnist_expected(digit(4))
        time.sleep(1.05)  # readiness is cached for a second
        assert c.get("/v2/health/ready").status_code == 200


@pytest.mark.parametrize("datatype", ["FP32", "UINT8"])
def test_grpc_both_ways_matches_the_local_model(kserve: KServeProcess, datatype: str) -> None:
    kserve.ensure()
    settings = tiny_settings(**_route(kserve.grpc_target, datatype=datatype), _top={"grpc_port": free_port()})
    imgs = [digit(i) for i in range(6)]
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        labels = [c.post("/v1/predict", content=png(im)).json()["label"] for im in imgs]
        assert labels == [mnist_expected(im) for im in imgs]
        # gRPC in (tritonclient.grpc, batched), gRPC out (to KServe)
        client = tg.InferenceServerClient(f"127.0.0.1:{s.app.state.grpc_port}")
        x = np.stack(imgs)[..., None]
        inp = tg.InferInput("input", list(x.shape), "UINT8")
        inp.set_data_from_numpy(x)
        assert client.infer("up", [inp]).as_numpy("label").tolist() == labels
        assert client.is_model_ready("up")
        client.close()


def test_upstream_restart_recovers(kserve: KServeProcess) -> None:
    kserve.ensure()
    settings = tiny_settings(**_route(kserve.grpc_target, timeout_s=5))
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        assert c.post("/v1/predict", content=png(digit())).status_code == 200  # channel open
        kserve.stop()
        assert c.post("/v1/predict", content=png(digit())).status_code == 502
        kserve.ensure()
        r = c.post("/v1/predict", content=png(digit()))
        assert r.status_code == 200, r.text


def _logits(n: int, value: float = 0.0, shape: list[int] | None = None) -> pb.ModelInferResponse:
    shape = shape or [n, 10]
    res = pb.ModelInferResponse(model_name="x")
    res.outputs.add(name="logits", datatype="FP32", shape=shape)
    res.raw_output_contents.append(np.full(shape, value, np.float32).tobytes())
    return res


class _Broken(pb_grpc.GRPCInferenceServiceServicer):
    """A gRPC V2 server gone wrong; the model name picks the failure."""

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:
        return pb.ModelReadyResponse(ready=True)

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:
        n = int(request.inputs[0].shape[0])
        model = request.model_name
        if model == "slow":
            time.sleep(1.5)
            return _logits(n)
        if model == "error":
            context.abort(grpc.StatusCode.INTERNAL, "CUDA out of memory")
        if model == "shape":
            return _logits(n, shape=[n, 1, 10])
        if model == "nan":
            return _logits(n, float("nan"))
        if model == "empty":
            return pb.ModelInferResponse(model_name=model)
        if model == "ints":
            res = pb.ModelInferResponse(model_name=model)
            res.outputs.add(name="logits", datatype="INT64", shape=[n, 10])
            res.raw_output_contents.append(np.zeros((n, 10), np.int64).tobytes())
            return res
        if model == "short":
            res = _logits(n)
            res.raw_output_contents[0] = b"\0" * 7
            return res
        if model == "typed":  # scores in typed contents instead of raw: valid
            res = pb.ModelInferResponse(model_name=model)
            res.outputs.add(name="logits", datatype="FP32", shape=[n, 10])
            res.outputs[0].contents.fp32_contents.extend([0.0, 1.0] + [0.0] * 8)
            return res
        context.abort(grpc.StatusCode.NOT_FOUND, f"no model {model}")
        raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def broken() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(_Broken(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"grpc://127.0.0.1:{port}"
    server.stop(0)


@pytest.mark.parametrize(
    ("model", "status", "words", "kind"),
    [
        ("slow", 504, "did not answer within 0.5 s", "timeout"),
        ("error", 502, "answered gRPC INTERNAL: CUDA out of memory", "bad_status"),
        ("missing", 502, "answered gRPC NOT_FOUND", "bad_status"),
        ("shape", 502, "expected [1, classes]", "bad_answer"),
        ("nan", 502, "NaN", "bad_answer"),
        ("empty", 502, "no outputs", "bad_answer"),
        ("ints", 502, "INT64", "bad_answer"),
        ("short", 502, "holds 7 bytes", "bad_answer"),
    ],
)
def test_broken_upstreams(broken: str, model: str, status: int, words: str, kind: str) -> None:
    settings = tiny_settings(**_route(broken, model=model, timeout_s=0.5))
    with serve(settings) as s, httpx.Client(base_url=s.url, timeout=30) as c:
        r = c.post("/v1/predict", content=png(digit()))
        assert r.status_code == status, r.text
        assert words in r.json()["error"]
        metrics = c.get("/metrics").text
        assert f'fencebox_upstream_errors_total{{kind="{kind}",route="up"}} 1.0' in metrics


def test_typed_contents_answer_is_read(broken: str) -> None:
    with serve(tiny_settings(**_route(broken, model="typed"))) as s:
        r = httpx.post(f"{s.url}/v1/predict", content=png(digit()), timeout=30)
        assert r.status_code == 200 and r.json()["label"] == 1, r.text


def test_grpc_url_must_be_host_port() -> None:
    with pytest.raises(ValueError, match="host:port or grpc://host:port"):
        BackendConfig(kind="upstream", protocol="grpc", url="http://127.0.0.1:1", input_shape=(28, 28, 1))
