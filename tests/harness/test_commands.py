"""`fencebox evaluate --threat patch` and `--attacks advgan`: their own report rows, clear errors up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fencebox.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FACES = ["evaluate", "-m", "builtin:faces", "-d", "builtin:faces-test", "-n", "12", "--chains", "none"]


def test_patch_threats_are_their_own_rows(tmp_path: Path) -> None:
    args = [*FACES, "--threat", "patch,bpda", "--patch-size", "0.05", "--patch-shape", "square|glasses"]
    opts = [
        "--patch-steps",
        "2",
        "--train-limit",
        "40",
        "--attacks",
        "fgsm",
        "--eps",
        "0.1",
        "--check-n",
        "4",
    ]
    r = CliRunner().invoke(app, [*args, *opts, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "report.json").read_text())
    assert [p["threat"] for p in doc["patch_results"]] == ["patch-square", "patch-glasses"]
    assert all("eps" not in p for p in doc["patch_results"])  # no ε: outside the L-inf worst case
    assert {row["threat"] for row in doc["results"]} == {"bpda"}
    assert "## Patch threats" in (tmp_path / "report.md").read_text()


def test_advgan_column_next_to_pgd(tmp_path: Path) -> None:
    args = [*FACES, "--threat", "bpda", "--attacks", "pgd,advgan", "--eps", "0.1", "--steps", "2"]
    opts = ["--advgan-epochs", "1", "--train-limit", "40", "--check-n", "4"]
    r = CliRunner().invoke(app, [*args, *opts, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "report.json").read_text())
    (row,) = doc["advgan_results"]
    assert row["levels"] == 25 and row["pgd_steps"] == 2 and row["images_per_s"] > 0
    assert "## AdvGAN next to PGD" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-d", "builtin:mnist-test", "-m", "builtin:mnist", "--patch-shape", "glasses"], "eye line"),
        (["--patch-size", "2"], "larger than the image"),
        (["--patch-shape", "circle"], "unknown patch shape"),
        (["-d", "npz:/nonexistent.npz"], "no such file"),
    ],
)
def test_bad_patch_arguments_fail_before_any_attack(tmp_path: Path, extra: list[str], message: str) -> None:
    r = CliRunner().invoke(app, [*FACES, "--threat", "patch", *extra, "--out", str(tmp_path)])
    assert r.exit_code == 2 and message in r.output, r.output
    assert not (tmp_path / "report.json").exists()
