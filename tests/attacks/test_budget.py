"""One budget: the harness's PGD, judged on uint8, agrees with a plain-torch PGD and never loses a success."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fencebox.attacks.geometry import eps_levels, snap
from fencebox.attacks.gradient import pgd
from fencebox.harness import UndefendedClassifier
from fencebox.harness.runner import EvalConfig, Runner
from fencebox.harness.threats import THREATS
from fencebox.models import load_dataset, load_model
from fencebox.spec import load_chain
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from tests.harness.toy import toy_data, toy_model

EPS = 25 / 255


def _plain_pgd40(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """Madry PGD-40 written out: one random start, sign steps of 2.5 eps / 40, float iterates."""
    gen = torch.Generator().manual_seed(seed)
    adv = (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * EPS).clamp(0, 1)
    for _ in range(40):
        adv.requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = torch.min(torch.max(adv.detach() + 2.5 * EPS / 40 * g.sign(), x - EPS), x + EPS).clamp(0, 1)
    return adv.detach()


def test_harness_pgd40_matches_a_plain_pgd40_on_mnist() -> None:
    images, labels = load_dataset("builtin:mnist-test")
    images, labels = images[:200], labels[:200]
    model = load_model("builtin:mnist", device="cpu")
    x = nhwc_uint8_to_nchw_float(images)
    y = torch.from_numpy(labels)
    adv = _plain_pgd40(model.logits, x, y, seed=0)
    u8 = np.clip(np.rint(adv.permute(0, 2, 3, 1).numpy() * 255), 0, 255).astype(np.uint8)  # uint8 judging
    assert np.abs(u8.astype(int) - images.astype(int)).max() <= eps_levels(EPS)
    plain = float((model.predict(u8) == labels).mean())

    cfg = EvalConfig(attacks=["pgd"], eps=[EPS], steps=40, restarts=1, batch=200)
    runner = Runner(model, images, labels, cfg, model_ref="builtin:mnist")
    chain = load_chain("none")
    row = runner.unit("none", chain, THREATS["oblivious"], "linf", EPS, runner.clean("none", chain))
    assert row.eps_levels == 25
    assert abs(row.robust_accuracy - plain) <= 0.02, (row.robust_accuracy, plain)


def test_every_success_the_attack_reports_survives_the_judge() -> None:
    model = UndefendedClassifier(toy_model())
    images, labels = toy_data(48)
    x, y = nhwc_uint8_to_nchw_float(images), torch.from_numpy(labels)
    for eps in (0.05, 0.1, 0.3):
        out = pgd(model, x, y, eps, steps=10, generator=torch.Generator().manual_seed(1), lattice=True)
        with torch.no_grad():
            fooled = model(out.x_adv).argmax(1) != y
        assert torch.equal(snap(out.x_adv, x, eps, "linf"), out.x_adv)  # already on the lattice
        u8 = np.rint(out.x_adv.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
        judged = toy_model().predict(u8) != labels
        assert np.array_equal(judged, fooled.numpy())
        assert np.abs(u8.astype(int) - images.astype(int)).max() <= eps_levels(eps)
