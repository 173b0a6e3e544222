"""DefendedClassifier: exact forward, BPDA / surrogate backward, EOT averaging, input checks."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from fencebox.chain import Chain, RandomApply
from fencebox.errors import InputError
from fencebox.harness import DefendedClassifier, UndefendedClassifier
from fencebox.spec import load_chain
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Params, Transform
from tests.harness.toy import toy_data, toy_model


class Invert(Transform):
    """Test transform: 255 - x, with the exact surrogate 1 - x (so BPDA and surrogate gradients differ)."""

    name = "test_invert"
    surrogate_kind = "exact"

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        return 255 - images

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return 1.0 - x


def _batch(n: int = 8) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    images, labels = toy_data(n)
    return images, nhwc_uint8_to_nchw_float(images), torch.from_numpy(labels)


def _grad(module: Any, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(module(xg), y).backward()
    assert xg.grad is not None
    return xg.grad


def test_forward_is_the_exact_serving_path() -> None:
    model = toy_model()
    chain = load_chain("bit_depth(bits=2)")
    _, x, _ = _batch()
    noisy = (x + 0.013 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    out = DefendedClassifier(model, chain).forward(noisy).detach().numpy()
    u8 = np.clip(np.rint(noisy.permute(0, 2, 3, 1).numpy() * 255), 0, 255).astype(np.uint8)
    expected = model.predict_logits(chain.run(u8, 0))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_bpda_backward_is_the_model_gradient_at_the_purified_point() -> None:
    model = toy_model()
    chain = Chain([Invert()])
    images, x, y = _batch()
    g_bpda = _grad(DefendedClassifier(model, chain, gradient="bpda"), x, y)
    purified = nhwc_uint8_to_nchw_float(255 - images)
    g_model = _grad(UndefendedClassifier(model), purified, y)
    torch.testing.assert_close(g_bpda, g_model)
    g_sur = _grad(DefendedClassifier(model, chain, gradient="surrogate"), x, y)
    torch.testing.assert_close(g_sur, -g_model)  # d(1 - x)/dx = -1: the surrogate is really used


def test_eot_averages_logits_over_fresh_draws() -> None:
    model = toy_model()
    chain = RandomApply(p=0.5, transform=Invert())
    images, x, _ = _batch(4)
    plain = model.predict_logits(images)
    inverted = model.predict_logits(255 - images)
    many = DefendedClassifier(model, chain, eot_samples=400, seed=3).forward(x).detach().numpy()
    # each of 400 draws picks plain or inverted: the mean lies between and near the 50/50 mixture
    mixture = 0.5 * (plain + inverted)
    spread = np.abs(plain - inverted)
    assert np.all(np.abs(many - mixture) <= 0.1 * spread + 1e-4)
    one = DefendedClassifier(model, chain, eot_samples=1, seed=3).forward(x).detach().numpy()
    assert all(np.allclose(r, p) or np.allclose(r, q) for r, p, q in zip(one, plain, inverted, strict=True))


def test_eot_gradient_is_finite_and_seeded() -> None:
    model = toy_model()
    chain = load_chain("choice(k=1, transforms=[bit_depth(bits=2), bit_depth(bits=3, mode='truncate')])")
    _, x, y = _batch(4)
    g1 = _grad(DefendedClassifier(model, chain, eot_samples=5, seed=1), x, y)
    g2 = _grad(DefendedClassifier(model, chain, eot_samples=5, seed=1), x, y)
    assert torch.isfinite(g1).all() and g1.abs().sum() > 0
    torch.testing.assert_close(g1, g2)


def test_judge_draws_are_independent_of_the_attackers() -> None:
    model = toy_model()
    chain = RandomApply(p=0.5, transform=Invert())
    d = DefendedClassifier(model, chain, seed=0)
    images, _, _ = _batch(64)
    attacker = d.rng.random(8)
    judge = d.judge_rng.random(8)
    assert not np.allclose(attacker, judge)
    assert d.judge(images).shape == (64,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"gradient": "magic"}, "gradient must be one of"), ({"eot_samples": 0}, "eot_samples must be")],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        DefendedClassifier(toy_model(), load_chain("none"), **kwargs)


def test_wrong_input_shape_is_refused() -> None:
    d = DefendedClassifier(toy_model(), load_chain("none"))
    with pytest.raises(InputError, match=r"expected images of shape \(N, 1, 28, 28\)"):
        d(torch.zeros(2, 3, 28, 28))
    with pytest.raises(InputError, match="float"):
        d(torch.zeros(2, 1, 28, 28, dtype=torch.uint8))
