"""`fencebox train --adversarial advgan`: a model trained on AdvGAN examples mixed with clean ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fencebox.cli import app
from fencebox.models import load_dataset, load_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
