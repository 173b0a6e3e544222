"""Verdicts on seeded draws: reproducible, batch-independent, and selection never shares draws with scoring."""

from __future__ import annotations

import numpy as np

from fencebox.harness.runner import EvalConfig, Runner
from fencebox.harness.verdict import Draws, worse
from fencebox.spec import load_chain
from tests.harness.toy import toy_data, toy_model

RANDOM = "choice(k=1, transforms=[bit_depth(bits=1), bit_depth(bits=2), gaussian_noise()])"


def test_draws_are_seeded_and_independent_of_chunking() -> None:
    images, labels = toy_data(40)
    chain = load_chain(RANDOM)
    a = Draws(toy_model(), chain, seed=7, draws=6).outcome(images, labels)
    b = Draws(toy_model(), chain, seed=7, draws=6, chunk=9).outcome(images, labels)
    assert a.correct.shape == (40, 6)
    np.testing.assert_array_equal(a.correct, b.correct)
    np.testing.assert_allclose(a.margin, b.margin, rtol=1e-5, atol=1e-5)
    assert Draws(toy_model(), load_chain("bit_depth(bits=3)"), 7, 6).draws == 1  # deterministic: one draw


def _flat(params: object) -> np.ndarray:
    if isinstance(params, dict):
        return np.concatenate([_flat(v) for _, v in sorted(params.items())] or [np.zeros(0)])
    if isinstance(params, list | tuple):
        return np.concatenate([_flat(v) for v in params] or [np.zeros(0)])
    return np.asarray(params, dtype=np.float64).ravel()


def test_selection_and_scoring_draws_differ() -> None:
    images, labels = toy_data(8)
    runner = Runner(toy_model(), images, labels, EvalConfig(score_draws=5, select_draws=5))
    chain = load_chain(RANDOM)
    sel, score = runner.selection(chain, "linf", 0.1, 8), runner.scoring(chain, "linf", 0.1, 8)
    assert sel.seed != score.seed
    shape = (8, 28, 28, 1)
    drawn = [_flat(d.params(r, shape)) for d in (sel, score) for r in range(5)]
    assert not any(np.array_equal(s, t) for s in drawn[:5] for t in drawn[5:])


def test_worse_ranks_fraction_then_margin() -> None:
    a = np.array([[0.5, 1.0], [0.5, -1.0], [1.0, 0.0]])
    b = np.array([[0.6, -5.0], [0.5, 0.0], [0.5, 0.0]])
    assert worse(a, b).tolist() == [True, True, False]


def test_robust_accuracy_is_the_mean_over_scoring_draws_and_strict_is_all_draws() -> None:
    images, labels = toy_data(16)
    cfg = EvalConfig(attacks=["fgsm"], eps=[0.1], steps=4, restarts=1, eot=2, select_draws=3, score_draws=7)
    runner = Runner(toy_model(), images, labels, cfg)
    chain = load_chain(RANDOM)
    from fencebox.harness.threats import THREATS

    row = runner.unit("r", chain, THREATS["bpda"], "linf", 0.1, runner.clean("r", chain))
    score = np.asarray(row.per_example["score"])
    assert np.all(score * 7 == np.round(score * 7))  # fractions of 7 scoring draws
    assert row.robust_accuracy == score.mean()
    assert row.strict_accuracy == (score == 1).mean()
    assert row.verdict["score"]["draws"] == 7 and row.verdict["select"]["draws"] == 3
