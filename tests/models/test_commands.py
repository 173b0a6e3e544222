"""The ``fencebox train`` command (``fencebox.models.commands``) on a small subset, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fencebox.cli import app
from fencebox.models import load_dataset, load_model


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
