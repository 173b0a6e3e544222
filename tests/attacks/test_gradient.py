"""White-box attacks and perturbation geometry: losses, APGD schedule, budgets, strength on a real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fencebox.attacks.geometry import distance_u8, eps_levels, flat_norm, quantise_within
from fencebox.attacks.gradient import apgd, apgd_checkpoints, dlr_loss, fgsm, margin_loss, pgd
from fencebox.errors import InputError
from fencebox.harness import UndefendedClassifier
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from tests.harness.toy import toy_data, toy_model


def _setup(n: int = 48) -> tuple[UndefendedClassifier, np.ndarray, torch.Tensor, torch.Tensor]:
    images, labels = toy_data(n)
    return (
        UndefendedClassifier(toy_model()),
        images,
        nhwc_uint8_to_nchw_float(images),
        torch.from_numpy(labels),
    )


def _acc(model: UndefendedClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_margin_loss_is_positive_exactly_when_misclassified() -> None:
    logits = torch.tensor([[3.0, 1.0, 0.0], [1.0, 2.0, 0.5], [0.0, 0.0, 5.0]])
    y = torch.tensor([0, 0, 2])
    m = margin_loss(logits, y)
    torch.testing.assert_close(m, torch.tensor([-2.0, 1.0, -5.0]))


def test_dlr_loss_matches_its_definition_and_needs_three_classes() -> None:
    logits = torch.tensor([[4.0, 1.0, 0.0, -1.0], [1.0, 3.0, 2.0, 0.0]])
    y = torch.tensor([0, 0])
    # example 0: -(4 - 1) / (4 - 0); example 1: -(1 - 3) / (3 - 1)
    torch.testing.assert_close(dlr_loss(logits, y), torch.tensor([-0.75, 1.0]))
    with pytest.raises(InputError, match="at least 3 classes"):
        dlr_loss(torch.zeros(1, 2), torch.tensor([0]))


def test_apgd_checkpoints_follow_the_paper() -> None:
    # p_j = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce & Hein 2020, Sec. 3.2)
    assert apgd_checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]


@settings(max_examples=8, deadline=None)
@given(eps=st.floats(0.0, 0.5), norm=st.sampled_from(["linf", "l2"]), seed=st.integers(0, 1000))
def test_attacks_stay_in_the_ball_and_the_box(eps: float, norm: str, seed: int) -> None:
    model, _, x, y = _setup(6)
    radius = eps if norm == "linf" else eps * 10
    gen = torch.Generator().manual_seed(seed)
    for out in (
        pgd(model, x, y, radius, norm, steps=3, generator=gen),
        apgd(model, x, y, radius, norm, steps=4, loss="dlr", generator=gen),
    ):
        assert out.x_adv.min() >= 0 and out.x_adv.max() <= 1
        assert (flat_norm(out.x_adv - x, norm) <= radius + 1e-5).all()


@settings(max_examples=25, deadline=None)
@given(
    eps=st.floats(0.0, 0.5),
    norm=st.sampled_from(["linf", "l2"]),
    seed=st.integers(0, 2**31 - 1),
)
def test_quantised_adversarials_never_leave_the_ball(eps: float, norm: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x0 = rng.integers(0, 256, (3, 5, 5, 1), dtype=np.uint8)
    radius = eps if norm == "linf" else eps * 3
    x = nhwc_uint8_to_nchw_float(x0).double()
    d = torch.from_numpy(rng.normal(size=x.shape))
    d = d / flat_norm(d, norm).view(-1, 1, 1, 1) * radius if norm == "l2" else d.clamp(-1, 1) * radius
    adv = quantise_within(x0, (x + d).clamp(0, 1), radius, norm)
    assert adv.dtype == np.uint8
    assert (distance_u8(adv, x0, norm) <= radius + 1e-9).all()
    if norm == "linf":
        assert eps_levels(radius) / 255 <= radius + 1e-9


def test_undefended_model_falls_at_eps_03() -> None:
    model, _, x, y = _setup()
    clean = _acc(model, x, y)
    adv = pgd(model, x, y, 0.3, "linf", steps=20, generator=torch.Generator().manual_seed(0)).x_adv
    assert clean > 0.85
    assert _acc(model, adv, y) <= 0.05


def test_apgd_is_at_least_as_strong_as_fgsm_and_counts_its_gradients() -> None:
    model, _, x, y = _setup()
    f = fgsm(model, x, y, 0.08)
    a = apgd(model, x, y, 0.08, "linf", steps=20, generator=torch.Generator().manual_seed(0))
    assert (f.queries == 1).all() and int(a.queries.min()) >= 1 and int(a.queries.max()) <= 21
    assert _acc(model, a.x_adv, y) <= _acc(model, f.x_adv, y)
    assert _acc(model, a.x_adv, y) < 0.6 * _acc(model, x, y)


def test_l2_pgd_and_cw_loss_break_the_toy() -> None:
    model, _, x, y = _setup()
    gen = torch.Generator().manual_seed(0)
    assert _acc(model, pgd(model, x, y, 3.0, "l2", steps=20, loss="cw", generator=gen).x_adv, y) <= 0.1


def test_bad_arguments_are_refused() -> None:
    model, _, x, y = _setup(2)
    with pytest.raises(InputError, match="unknown norm"):
        pgd(model, x, y, 0.1, "l1")
    with pytest.raises(InputError, match="unknown loss"):
        pgd(model, x, y, 0.1, loss="hinge")
    with pytest.raises(InputError, match="steps"):
        apgd(model, x, y, 0.1, steps=1)


def test_without_early_stop_every_example_runs_every_step() -> None:
    model, _, x, y = _setup(16)
    gen = torch.Generator().manual_seed(0)
    early = pgd(model, x, y, 0.3, "linf", steps=10, generator=gen)
    full = apgd(
        model, x, y, 0.3, "linf", steps=10, generator=torch.Generator().manual_seed(0), early_stop=False
    )
    assert int(early.queries.min()) < 11  # fooled examples left the run early
    assert (full.queries == 11).all()
    with torch.no_grad():
        assert _acc(model, full.x_adv, y) == 0.0  # the highest-loss iterate is kept, and it is adversarial
