"""Patch and AdvGAN rows are judged like every other threat: worst candidate on selection draws, fresh scoring draws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fencebox import load_chain
from fencebox.harness.judged import Judge, VerdictConfig
from fencebox.harness.verdict import Draws, select_worst
from tests.harness.toy import toy_data, toy_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**20), k=st.integers(1, 3))
def test_select_worst_is_never_better_than_any_candidate_on_the_selection_draws(seed: int, k: int) -> None:
    model = toy_model()
    x, y = toy_data(12)
    rng = np.random.default_rng(seed)
    cands = [x.copy(), *[rng.integers(0, 256, x.shape, dtype=np.uint8) for _ in range(k)]]
    draws = Draws(model, load_chain("gaussian_noise()"), seed, 4)
    best, key, chosen = select_worst(draws, y, cands)
    keys = [draws.outcome(c, y).key() for c in cands]
    assert (best == np.stack([cands[c][i] for i, c in enumerate(chosen)])).all()
    for kk in keys:  # lexicographic: fraction correct, then mean margin
        assert ((key[:, 0] < kk[:, 0]) | ((key[:, 0] == kk[:, 0]) & (key[:, 1] <= kk[:, 1]))).all()


def test_random_chain_rows_score_on_fresh_independent_draws() -> None:
    model = toy_model()
    x, y = toy_data(16)
    chain = load_chain("gaussian_noise()")
    cfg = VerdictConfig(seed=3, select_draws=5, score_draws=7)
    judge = Judge(model, chain, cfg, "patch-square-0.1")
    noisy = np.clip(x.astype(int) + 60, 0, 255).astype(np.uint8)
    judged = judge(x, y, [noisy])
    v = judged.verdict
    assert v["randomized"] and v["score"]["draws"] == 7 and v["select"]["draws"] == 5
    assert v["score"]["seed"] != v["select"]["seed"]
    again = Draws(model, chain, v["score"]["seed"], 7).outcome(judged.images, y)  # what replay does
    assert (again.fraction == judged.score).all() and (again.correct.all(1) == judged.strict).all()
    s = judged.summary()
    assert s["robust_accuracy"] == pytest.approx(judged.score.mean())
    assert s["strict_accuracy"] <= s["robust_accuracy"] and s["n"] == 16
    # a deterministic chain needs one draw
    assert Judge(model, load_chain("none"), cfg, "g")(x, y, [noisy]).verdict["score"]["draws"] == 1
