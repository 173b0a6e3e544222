"""The harness attacks exactly what the service answers: HTTP oracle byte for byte, local oracle value for value."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import torch

from fencebox.harness import DefendedClassifier
from fencebox.harness.http_oracle import HttpOracle, LocalService
from fencebox.harness.oracle import LocalOracle
from fencebox.service import v2codec
from fencebox.spec import load_chain
from tests.harness.toy import toy_data, toy_model

CHAIN = "bit_depth(bits=3)"


def _raw(url: str, route: str, images: np.ndarray) -> dict[str, np.ndarray]:
    """What the service answers a plain V2 client, decoded without the harness."""
    tensor = v2codec.Tensor("input", "UINT8", list(images.shape), np.ascontiguousarray(images))
    body, headers = v2codec.encode([tensor], True, {}, key="inputs")
    resp = httpx.post(f"{url}/v2/models/{route}/infer", content=body, headers=headers, timeout=60)
    assert resp.status_code == 200, resp.text
    msg = v2codec.decode(resp.content, resp.headers.get(v2codec.HEADER_LENGTH), key="outputs")
    return {t.name: t.data.reshape(t.shape) for t in msg.tensors}


def test_http_and_local_oracles_see_what_the_service_answers(tmp_path: Path) -> None:
    path = tmp_path / "toy.pt"
    torch.jit.save(torch.jit.script(toy_model().net), str(path))
    ref = f"torchscript:{path}?shape=28x28x1"
    images, _ = toy_data(16)
    routes = [(f"toy-{p}", ref, CHAIN, p) for p in ("scores", "rounded", "topk", "label")]
    with LocalService(routes, max_images=16) as svc:
        for _, _, _, policy in routes:
            raw = _raw(svc.url, f"toy-{policy}", images)
            oracle = HttpOracle(svc.url, f"toy-{policy}", max_images=16)
            got = oracle.query(images)
            oracle.close()
            local = LocalOracle(DefendedClassifier(toy_model(), load_chain(CHAIN)), policy).query(images)
            assert raw["label"].astype(np.int64).tobytes() == got.labels.tobytes()
            np.testing.assert_array_equal(local.labels, got.labels)
            if "scores" in raw:
                assert got.scores is not None and local.scores is not None
                assert raw["scores"].tobytes() == got.scores.astype(raw["scores"].dtype).tobytes()
                # The local oracle runs the eager module, the service a TorchScript copy (and other torch
                # threads): the same maths, whose float32 results may differ in the last bit, and by one
                # rounding step under ``rounded`` where a value sits on a rounding boundary.
                tol = 0.01 + 1e-6 if policy == "rounded" else 1e-6
                np.testing.assert_allclose(local.scores, got.scores, rtol=0, atol=tol)
            else:
                assert got.scores is None and local.scores is None
            if "topk" in raw:
                assert got.topk is not None and local.topk is not None
                assert raw["topk"].astype(np.int64).tobytes() == got.topk.tobytes()
                np.testing.assert_array_equal(local.topk, got.topk)
