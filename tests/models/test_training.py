"""Training (``fencebox.models.training``): determinism, PGD through a chain, npz data with an arch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fencebox.cli import app
from fencebox.models import load_dataset, load_model
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


def test_cli_trains_with_advgan_examples(tmp_path: Path) -> None:
    args = ["train", "mnist", "--adversarial", "advgan", "--eps", "0.2", "--epochs", "1", "--limit", "256"]
    result = CliRunner().invoke(app, [*args, "--test-limit", "50", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "AdvGAN eps=0.2" in result.output
    card = json.loads((tmp_path / "mnist.json").read_text())
    assert "AdvGAN adversarial training" in card["how_made"] and "51 grey levels" in card["how_made"]
    assert card["extra"]["config"]["adversarial"] == "advgan"
    assert set(card["accuracy"]) == {"clean", "pgd40_linf_eps0.2"}  # the same robust score as PGD training
    model = load_model(f"safetensors:{tmp_path / 'mnist.safetensors'}", device="cpu")
    x, y = load_dataset("builtin:mnist-test")
    assert float((model.predict(x[:50]) == y[:50]).mean()) == pytest.approx(
        card["accuracy"]["clean"], abs=1e-4
    )


def test_cli_refuses_bad_adversarial_settings(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["train", "mnist", "--adversarial", "gan", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "'advgan'" in r.output and "'pgd'" in r.output
    r = runner.invoke(
        app, ["train", "mnist", "--adversarial", "advgan", "--eps", "0.001", "--out", str(tmp_path)]
    )
    assert r.exit_code == 2 and "AdvGAN needs eps >= 1/255" in r.output
