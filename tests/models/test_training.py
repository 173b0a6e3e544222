"""Training (``fencebox.models.training``): determinism, PGD through a chain, npz data with an arch."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from fencebox.models.training import RECIPES, TrainConfig, train

TINY: dict[str, Any] = {"epochs": 1, "limit": 256, "test_limit": 100, "threads": 1}


def test_training_is_deterministic() -> None:
    cfg = dataclasses.replace(RECIPES["mnist"], **TINY)
    a, b = train(cfg), train(cfg)
    for (ka, va), (kb, vb) in zip(a.module.state_dict().items(), b.module.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    assert a.card.accuracy == b.card.accuracy
    other = train(dataclasses.replace(cfg, seed=cfg.seed + 1))
    assert not torch.equal(
        other.module.state_dict()["classifier.3.weight"], a.module.state_dict()["classifier.3.weight"]
    )


def test_adversarial_training_through_a_chain() -> None:
    cfg = dataclasses.replace(
        RECIPES["mnist-adv"], chain="bit_depth(bits=3)", steps=2, eps_warmup=0, eval_steps=2, **TINY
    )
    result = train(cfg)
    acc = result.card.accuracy
    assert set(acc) == {"clean", "clean_without_chain", "pgd2_linf_eps0.3"}
    assert "bit_depth(bits=3)" in result.card.how_made and "PGD" in result.card.how_made
    assert result.history[0].eps == pytest.approx(0.3)


def test_train_on_npz_with_arch(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 32)
    x = (rng.integers(0, 60, (64, 8, 8)) + 180 * y[:, None, None] * (np.arange(8) < 4)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    cfg = TrainConfig(
        name="tiny",
        arch="faces_cnn",
        data=f"npz:{tmp_path / 'd.npz'}",
        test_data=f"npz:{tmp_path / 'd.npz'}",
        epochs=15,
        batch_size=16,
        lr=5e-3,
    )
    result = train(cfg)
    assert result.card.input_shape == (8, 8, 1) and result.card.class_names == ["0", "1"]
    assert result.card.accuracy["clean"] > 0.9  # left half bright or not: trivially learnable
