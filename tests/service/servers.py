"""Shared pieces of the service tests: a small real torch Classifier, a uvicorn server in a thread,
and a KServe ModelServer in a subprocess (image factories are in tests/images.py).  (No tests here.)"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import torch
import uvicorn
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from fencebox.models.base import Classifier, ModelCard
from fencebox.service import create_app
from fencebox.service.settings import RouteConfig, Settings

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent
TINY_REF = "py:tests.service.servers:tiny_model"


class TinyNet(Classifier):
    """A small real CNN on 28x28x1 (seeded weights): conv -> pool -> linear, 10 classes."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.AvgPool2d(4),
            torch.nn.Flatten(),
            torch.nn.Linear(4 * 7 * 7, 10),
        )
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.net.eval()
        self.card = ModelCard(
            name="tiny", input_shape=(28, 28, 1), num_classes=10, class_names=[f"c{i}" for i in range(10)]
        )

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Float NCHW in [0, 1] -> logits (N, 10)."""
        out: torch.Tensor = self.net(x)
        return out

    def torch_module(self) -> torch.nn.Module:
        """The underlying module."""
        return self.net


_TINY: TinyNet | None = None


def tiny_model() -> TinyNet:
    """The process-wide TinyNet (its weights are seeded, so every process gets the same)."""
    global _TINY
    if _TINY is None:
        _TINY = TinyNet()
    return _TINY


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tiny_settings(**route: Any) -> Settings:
    """Settings with one local route 'tiny' serving TinyNet; ``route`` overrides route fields."""
    base: dict[str, Any] = {
        "name": "tiny",
        "backend": {"kind": "local", "model": TINY_REF},
        "chain": "bit_depth(bits=5)",
    }
    top = route.pop("_top", {})
    base.update(route)
    return Settings(routes=[RouteConfig(**base)], threads=2, **top)


class ServerThread:
    """uvicorn serving an app on a free loopback port, in a thread; ``url`` is its base URL."""

    def __init__(self, settings: Settings) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings)
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            proxy_headers=False,  # as `fencebox serve`: the app trusts forwarded_allow_ips only
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@contextlib.contextmanager
def serve(settings: Settings) -> Iterator[ServerThread]:
    """Run ``settings`` on a real socket for the duration of the block."""
    with ServerThread(settings) as s:
        yield s


class KServeProcess:
    """KServe's own ModelServer in a subprocess, serving TinyNet (or ``ref``) as V2 model ``name``
    (with ``grpc``, also over gRPC at ``grpc_target``; both ports stay the same across restarts)."""

    def __init__(
        self, name: str = "tiny", ref: str = TINY_REF, port: int | None = None, grpc: bool = False
    ) -> None:
        self.name, self.ref, self.grpc = name, ref, grpc
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.grpc_port = free_port()
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> KServeProcess:
        """Start the server and wait until the model is ready."""
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT), os.environ.get("PYTHONPATH", "")]),
        }
        cmd = [
            sys.executable,
            "-m",
            "fencebox.service.kserve_upstream",
            "--model",
            self.ref,
            "--name",
            self.name,
        ]
        cmd += ["--http_port", str(self.port), "--grpc_port", str(self.grpc_port), "--workers", "1"]
        if self.grpc:
            cmd.append("--grpc")
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"kserve exited with {self.proc.returncode}:\n{err[-3000:]}")
            if self._http_ready() and (not self.grpc or self._grpc_ready()):
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("kserve did not become ready")

    def _http_ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v2/models/{self.name}/ready", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def _grpc_ready(self) -> bool:
        """KServe starts its gRPC server alongside, not before, the HTTP one: ask it too."""
        with grpc.insecure_channel(self.grpc_target) as channel:
            try:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                return bool(stub.ModelReady(pb.ModelReadyRequest(name=self.name), timeout=1).ready)
            except grpc.RpcError:
                return False

    def ensure(self) -> KServeProcess:
        """Start the server unless it is running."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        return self

    def stop(self) -> None:
        """Terminate the subprocess (kill if it lingers)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr:
            self.proc.stderr.close()


class SlowNet(TinyNet):
    """TinyNet that takes 0.3 s per call: fills queues and runs past deadlines."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Sleep, then answer like TinyNet."""
        time.sleep(0.3)
        return super().logits(x)


def slow_model() -> SlowNet:
    """A fresh SlowNet."""
    return SlowNet()


class BrokenNet(TinyNet):
    """TinyNet whose model call fails with a bug (not a FenceboxError): the service's 500 path."""

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Fail like a bug would, on any image but the all-zero warm-up batch."""
        if float(x.max()) > 0:
            raise RuntimeError("a bug in the model wrapper")
        return super().logits(x)


def broken_model() -> BrokenNet:
    """A fresh BrokenNet."""
    return BrokenNet()
