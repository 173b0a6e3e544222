"""End to end: the harness breaks JPEG in front of the adversarially trained model (issue 10's case).

An earlier harness, whose JPEG surrogate had an identity gradient, reported 44% robust accuracy for
``builtin:mnist-adv`` + ``guo2018-jpeg`` at eps 0.3; an independent attack with a real differentiable JPEG
broke it to 0%.  This test runs the harness's own white-box threat on a small slice and asserts that the
surrogate gradient is what breaks it: identity BPDA alone leaves most digits standing, the threat (which
tries both estimators and keeps the per-example worst) does not.
"""

from __future__ import annotations

import numpy as np
import torch

from fencebox.harness.evaluate import evaluate
from fencebox.harness.runner import EvalConfig, Runner
from fencebox.harness.threats import parse_threats
from fencebox.models import load_dataset, load_model
from fencebox.spec import load_chain

N = 24


def test_bpda_threat_with_the_jpeg_surrogate_breaks_mnist_adv_behind_jpeg() -> None:
    torch.set_num_threads(1)
    images, labels = load_dataset("builtin:mnist-test")
    model = load_model("builtin:mnist-adv", device="cpu")
    cfg = EvalConfig(
        attacks=["apgd-ce"], eps=[0.3], steps=100, restarts=1, eot=1, check_n=N, select_draws=1, score_draws=1
    )
    runner = Runner(model, images[:N], labels[:N], cfg, model_ref="builtin:mnist-adv")
    doc = evaluate(
        runner, {"jpeg": load_chain("guo2018-jpeg")}, parse_threats(["bpda"]), {"model": "mnist-adv"}
    )
    row = next(r for r in doc["results"] if r["threat"] == "bpda")
    assert row["clean_accuracy"] >= 0.9, row
    # the committed report claimed 0.44 at this eps; measured here: 2 of 24 survive (identity BPDA alone: 19 of 23)
    assert row["robust_accuracy"] <= 0.25, row
    broke = {a["gradient"]: a["broke"] for a in row["attacks"]}
    assert broke["surrogate"] > broke["bpda"], broke  # the surrogate's gradient is what breaks JPEG


def _plain_pgd_robust(images: np.ndarray, labels: np.ndarray, steps: int) -> float:
    """A textbook PGD written here, sharing no harness code: exact JPEG forward, its surrogate backward.

    CE loss, one random start, signed steps of 2.5 eps / steps grey levels rounded to whole levels every
    step, clipped to floor(255 * 0.3) = 76 levels, stop per example at the first success (uint8 judging).
    """
    model = load_model("builtin:mnist-adv", device="cpu")
    chain = load_chain("guo2018-jpeg")
    params = chain.sample(np.random.default_rng(0), images.shape)
    y = torch.as_tensor(labels).long()
    eps, alpha = 76, 2.5 * 76 / steps
    x0 = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    gen = torch.Generator().manual_seed(1)
    adv = (x0 + torch.empty_like(x0).uniform_(-eps, eps, generator=gen)).clamp(0, 255).round()

    def u8(levels: torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(levels.detach().to(torch.uint8).permute(0, 2, 3, 1).numpy())

    standing = np.ones(len(images), dtype=bool)
    for _ in range(steps):
        a = adv.clone().requires_grad_(True)
        exact = torch.from_numpy(chain.apply(u8(adv), params)).permute(0, 3, 1, 2).float() / 255.0
        s = chain.surrogate(a / 255.0, params)
        loss = torch.nn.functional.cross_entropy(model.logits(s + (exact - s).detach()), y)
        (g,) = torch.autograd.grad(loss, a)
        adv = torch.min(torch.max((adv + alpha * g.sign()).round(), x0 - eps), x0 + eps).clamp(0, 255)
        standing &= model.predict(chain.apply(u8(adv), params)) == labels
    return float(standing.mean())


def test_harness_pgd_is_not_weaker_than_a_plain_pgd_behind_jpeg() -> None:
    # the harness's PGD on the lattice (both estimators, per-example worst) against the textbook PGD above
    torch.set_num_threads(1)
    images, labels = load_dataset("builtin:mnist-test")
    x, y = images[:N], labels[:N].astype(np.int64)
    model = load_model("builtin:mnist-adv", device="cpu")
    cfg = EvalConfig(
        attacks=["pgd"], eps=[0.3], steps=50, restarts=1, eot=1, check_n=N, select_draws=1, score_draws=1
    )
    runner = Runner(model, x, y, cfg, model_ref="builtin:mnist-adv")
    doc = evaluate(
        runner, {"jpeg": load_chain("guo2018-jpeg")}, parse_threats(["bpda"]), {"model": "mnist-adv"}
    )
    harness = next(r for r in doc["results"] if r["threat"] == "bpda")["robust_accuracy"]
    plain = _plain_pgd_robust(x, y, 50)
    # random starts differ, so allow 2 of 24 digits; measured on the first 100 digits at 100 steps:
    # plain 34%, the harness's PGD with the surrogate alone 36%, its APGD-CE alone 7%
    assert plain < 0.9  # the plain attack works at all (identity BPDA alone leaves ~88% standing)
    assert harness <= plain + 2 / N, (harness, plain)
