"""Black-box attacks and oracles: policies, budgets, Square vs HopSkipJump, the HTTP service path."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fencebox.attacks.geometry import distance_u8
from fencebox.errors import FenceboxError, InputError
from fencebox.harness import DefendedClassifier
from fencebox.harness.blackbox import hop_skip_jump, square_linf, square_p
from fencebox.harness.oracle import LocalOracle, apply_policy, margins
from fencebox.spec import load_chain
from tests.harness.toy import toy_data, toy_model


def _oracle(policy: str, chain: str = "none") -> LocalOracle:
    return LocalOracle(DefendedClassifier(toy_model(), load_chain(chain), seed=0), policy)


def test_policies_expose_only_what_they_allow() -> None:
    probs = np.array([[0.1, 0.7, 0.2], [0.5, 0.2, 0.3]])
    label = apply_policy(probs, "label")
    assert label.scores is None and label.topk is None and label.labels.tolist() == [1, 0]
    top = apply_policy(probs, "topk", k=2)
    assert top.scores is None and top.topk is not None and top.topk.tolist() == [[1, 2], [0, 2]]
    rounded = apply_policy(np.array([[0.123456, 0.876544]]), "rounded")
    # the float32 values the service's V2 route sends for 0.12 and 0.88
    assert rounded.scores is not None and rounded.scores.tolist() == np.float32([[0.12, 0.88]]).tolist()
    with pytest.raises(FenceboxError, match="output policy"):
        apply_policy(probs, "everything")
    with pytest.raises(InputError, match="no scores"):
        margins(label, np.array([1, 0]))


def test_square_schedule_halves_p_at_the_papers_iterations() -> None:
    assert square_p(0.8, 0, 10_000) == 0.8
    assert square_p(0.8, 11, 10_000) == 0.4
    assert square_p(0.8, 9_000, 10_000) == 0.8 / 512
    assert square_p(0.8, 30, 300) == 0.8 / 16  # 30/300 of the way = iteration 1000 of 10 000: in (500, 1000]


def test_square_breaks_the_undefended_toy_within_budget_and_ball() -> None:
    images, labels = toy_data(24)
    oracle = _oracle("scores")
    out = square_linf(oracle, images, labels, 0.3, budget=150, seed=0)
    assert (out.queries <= 150).all() and oracle.queries == out.queries.sum()
    assert (distance_u8(out.x_adv, images, "linf") <= 0.3 + 1e-9).all()
    fooled = toy_model().predict(out.x_adv) != labels
    assert fooled.mean() >= 0.8
    np.testing.assert_array_equal(out.success, fooled)  # deterministic chain: the attack's view is the truth


def test_label_only_costs_hopskipjump_more_queries_than_square_with_scores() -> None:
    images, labels = toy_data(12)
    sq = square_linf(_oracle("scores"), images, labels, 0.3, budget=400, seed=0)
    hsj = hop_skip_jump(_oracle("label"), images, labels, 0.3, "linf", budget=400, seed=0)
    assert (hsj.queries <= 400).all()
    ok = hsj.success
    assert ok.any()
    assert (distance_u8(hsj.x_adv[ok], images[ok], "linf") <= 0.3 + 1e-9).all()
    assert (toy_model().predict(hsj.x_adv[ok]) != labels[ok]).all()
    assert np.median(hsj.queries[ok]) > np.median(sq.queries[sq.success])


def test_hopskipjump_l2_finds_boundary_points() -> None:
    images, labels = toy_data(4)
    out = hop_skip_jump(_oracle("label"), images, labels, 4.0, "l2", budget=600, seed=1)
    assert out.success.any()
    assert (distance_u8(out.x_adv[out.success], images[out.success], "l2") <= 4.0 + 1e-9).all()


def test_http_oracle_answers_like_the_local_serving_path(tmp_path: Path) -> None:
    from fencebox.harness.http_oracle import HttpOracle, LocalService

    path = tmp_path / "toy.pt"
    torch.jit.save(torch.jit.script(toy_model().net), str(path))
    ref = f"torchscript:{path}?shape=28x28x1"
    images, labels = toy_data(70)
    routes = [
        ("toy-scores", ref, "bit_depth(bits=3)", "scores"),
        ("toy-label", ref, "bit_depth(bits=3)", "label"),
    ]
    with LocalService(routes, max_images=32) as svc:
        scores = HttpOracle(svc.url, "toy-scores", max_images=32)
        label = HttpOracle(svc.url, "toy-label", max_images=32)
        assert (scores.policy, label.policy) == ("scores", "label")
        got = scores.query(images)
        local = _oracle("scores", "bit_depth(bits=3)").query(images)
        np.testing.assert_array_equal(got.labels, local.labels)
        assert got.scores is not None and local.scores is not None
        np.testing.assert_allclose(got.scores, local.scores, atol=1e-5)
        assert label.query(images[:3]).scores is None
        assert scores.queries == 70 and label.queries == 3
        out = square_linf(scores, images[:8], labels[:8], 0.3, budget=40, seed=0)
        assert (out.queries <= 40).all()
