"""Training: the `fencebox train` command on a small subset, determinism, PGD and chain augmentation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fencebox import load_chain
from fencebox.cli import app
from fencebox.models import load_dataset, load_model
from fencebox.models.augment import ChainLayer, random_shift
from fencebox.models.training import RECIPES, TrainConfig, train

TINY: dict[str, Any] = {"epochs": 1, "limit": 256, "test_limit": 100, "threads": 1}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_cli_train_writes_loadable_weights(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["train", "mnist", "--epochs", "3", "--limit", "600", "--test-limit", "200", "--out", str(tmp_path)],
    )
    assert result.exit_code == 0, result.output
    assert "epoch   3/3" in result.output and "test acc" in result.output
    weights = tmp_path / "mnist.safetensors"
    card = json.loads((tmp_path / "mnist.json").read_text())
    assert card["extra"]["config"]["limit"] == 600 and len(card["extra"]["history"]) == 3
    model = load_model(f"safetensors:{weights}", device="cpu")
    x, y = load_dataset("builtin:mnist-test")
    acc = float((model.predict(x[:200]) == y[:200]).mean())
    assert acc == pytest.approx(card["accuracy"]["clean"], abs=1e-4)
    assert acc > 0.5  # three epochs on 600 digits already learn something


def test_cli_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["train", "resnet50", "--data", "builtin:mnist-train", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unknown model" in r.output
    r = runner.invoke(app, ["train", "mnist", "--adversarial", "fgsm", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "'pgd'" in r.output
    r = runner.invoke(app, ["train", "mnist_cnn", "--data", "builtin:photos", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "unlabelled" in r.output


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


def test_chain_layer_exact_forward_bpda_backward() -> None:
    chain = load_chain("bit_depth(bits=2)")
    layer = ChainLayer(chain, seed=0)
    x = torch.rand(3, 1, 6, 6, requires_grad=True)
    out = layer(x)
    u8 = (x.detach() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    exact = torch.from_numpy(chain.run(u8, 0)).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(out.detach(), exact)
    out.sum().backward()
    assert x.grad is not None and torch.allclose(x.grad, torch.ones_like(x))  # bit_depth's surrogate is BPDA


def test_random_shift_moves_content() -> None:
    x = torch.zeros(4, 1, 5, 5)
    x[:, :, 2, 2] = 1
    out = random_shift(x, 1, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.equal(out.sum(dim=(1, 2, 3)), torch.ones(4))
    assert random_shift(x, 0, torch.Generator()) is x
