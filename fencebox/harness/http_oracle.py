"""Black-box access through the FenceBox HTTP service: a V2 (Open Inference Protocol) query client.

:class:`HttpOracle` sends uint8 NHWC batches to ``POST /v2/models/{route}/infer`` (binary tensor
extension, at most ``max_images`` per request) and reads back exactly what the route's output policy
exposes: ``label`` always, ``scores`` (probabilities, maybe rounded) or ``topk`` (a ranking) when
present.  Every image counts as one query.  :class:`LocalService` starts the real service app
(uvicorn, a free local port, in a background thread) with one route per (chain, policy), so an
evaluation can attack the service exactly as a remote client would.
"""

from __future__ import annotations

import threading
import time
from types import TracebackType
from typing import Any

import numpy as np

from fencebox.errors import ModelError
from fencebox.harness.oracle import OracleAnswer


class HttpOracle:
    """Queries one route of a running FenceBox service; the policy is read from the route's V2 metadata."""

    def __init__(
        self,
        base_url: str,
        route: str,
        api_key: str | None = None,
        max_images: int = 64,
        timeout_s: float = 60.0,
    ) -> None:
        import httpx

        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s)
        self.route = route
        self.max_images = max_images
        self.queries = 0
        meta = self.client.get(f"/v2/models/{route}")
        if meta.status_code != 200:
            raise ModelError(
                f"service at {base_url} has no route {route!r}: HTTP {meta.status_code} {meta.text[:200]}"
            )
        outputs = {o["name"] for o in meta.json().get("outputs", [])}
        self.policy = "scores" if "scores" in outputs else ("topk" if "topk" in outputs else "label")

    def query(self, images: np.ndarray) -> OracleAnswer:
        """Classify a uint8 NHWC batch through the service, in requests of at most ``max_images``."""
        from fencebox.service import v2codec

        labels, scores, topk = [], [], []
        for i in range(0, images.shape[0], self.max_images):
            part = np.ascontiguousarray(images[i : i + self.max_images], dtype=np.uint8)
            tensor = v2codec.Tensor("input", "UINT8", list(part.shape), part)
            body, headers = v2codec.encode([tensor], True, {}, key="inputs")
            resp = self.client.post(f"/v2/models/{self.route}/infer", content=body, headers=headers)
            if resp.status_code != 200:
                raise ModelError(f"service answered HTTP {resp.status_code}: {resp.text[:300]}")
            msg = v2codec.decode(resp.content, resp.headers.get(v2codec.HEADER_LENGTH), key="outputs")
            got = {t.name: t.data.reshape(t.shape) for t in msg.tensors}
            labels.append(got["label"].astype(np.int64))
            if "scores" in got:
                scores.append(got["scores"].astype(np.float64))
            if "topk" in got:
                topk.append(got["topk"].astype(np.int64))
            self.queries += part.shape[0]
        return OracleAnswer(
            np.concatenate(labels),
            np.concatenate(scores) if scores else None,
            np.concatenate(topk) if topk else None,
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self.client.close()


class LocalService:
    """The real FenceBox service on 127.0.0.1 (a free port) in a background thread, for the harness.

    ``routes`` is a list of ``(route name, model ref, chain spec, policy)``.  Use as a context manager;
    ``url`` is the base URL once started.
    """

    def __init__(
        self, routes: list[tuple[str, str, str, str]], threads: int = 1, max_images: int = 64
    ) -> None:
        self.routes = routes
        self.threads = threads
        self.max_images = max_images
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LocalService:
        import uvicorn

        from fencebox.service import create_app, load_settings

        settings = load_settings(
            None,
            host="127.0.0.1",
            port=0,
            threads=self.threads,
            log_level="warning",
            routes=[
                {
                    "name": name,
                    "backend": {"kind": "local", "model": model},
                    "chain": chain,
                    "policy": policy,
                    "limits": {"max_images": self.max_images, "timeout_s": 600},
                    "batching": {"max_batch": self.max_images, "max_delay_ms": 0},
                }
                for name, model, chain, policy in self.routes
            ],
        )
        config = uvicorn.Config(
            create_app(settings), host="127.0.0.1", port=0, log_level="warning", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise ModelError("the FenceBox service did not start within 120 s")
            time.sleep(0.05)
        port = self._server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
