"""The evaluate command: one error path (exit 2, message on stderr) and no advice the user already took."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fencebox.cli import app
from tests.harness.toy import toy_data, toy_model


def _args(tmp_path: Path, select: str) -> list[str]:
    path = tmp_path / "toy.pt"
    torch.jit.save(torch.jit.script(toy_model().net), str(path))
    images, labels = toy_data(200)
    order = np.argsort(labels, kind="stable")[:8]  # sorted by class: the first 8 are all one class
    np.savez(tmp_path / "sorted.npz", x=images[order], y=labels[order])
    return [
        "evaluate",
        "--model",
        f"torchscript:{path}?shape=28x28x1",
        "--data",
        f"npz:{tmp_path / 'sorted.npz'}",
        "-n",
        "4",
        "--select",
        select,
        "--chains",
        "none",
        "--threat",
        "blackbox-label",
        "--service",
        "http://127.0.0.1:9",  # no --route: a configuration mistake found once the attacks start
        "--fast",
        "--out",
        str(tmp_path / f"out-{select}"),
    ]


def test_the_select_hint_is_only_given_when_not_already_followed(tmp_path: Path) -> None:
    for select, hinted in (("first", True), ("spread", False)):
        res = CliRunner().invoke(app, _args(tmp_path, select))
        assert res.exit_code == 2, res.output
        assert "error:" in res.output and "no service route" in res.output
        assert "cover only" in res.output
        assert ("try --select spread" in res.output) is hinted


def test_defaults_are_an_evaluation_and_fast_is_marked_a_smoke_run() -> None:
    import pytest

    from fencebox.errors import ConfigError
    from fencebox.harness.commands import build_config

    full = build_config({"eps": "0.1"})
    assert (full.attacks, full.steps, full.restarts, full.eot, full.check_n) == (
        ["apgd-ce", "apgd-dlr", "pgd"],
        100,
        5,
        20,
        100,
    )
    assert not full.smoke and full.score_draws == 20
    fast = build_config({"eps": "0.1", "fast": True, "steps": 7})
    assert fast.smoke and fast.steps == 7 and fast.restarts == 1
    old = build_config({"eps": "0.1", "strong": True, "steps": 20})
    assert (old.steps, old.restarts) == (100, 5)
    with pytest.raises(ConfigError, match="contradict"):
        build_config({"eps": "0.1", "strong": True, "fast": True})


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
    opts = ["--advgan-epochs", "1", "--train-limit", "40", "--fast"]
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


def test_patch_threat_alone_runs_no_linf_units(tmp_path: Path) -> None:
    args = [
        *FACES,
        "--threat",
        "patch",
        "--patch-shape",
        "glasses",
        "--patch-steps",
        "1",
        "--train-limit",
        "10",
    ]
    r = CliRunner().invoke(app, [*args, "--fast", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "report.json").read_text())
    assert doc["results"] == [] and [p["threat"] for p in doc["patch_results"]] == ["patch-glasses"]


def test_patch_and_advgan_adversarials_are_saved_and_replay_prints_the_same_numbers(tmp_path: Path) -> None:
    args = [*FACES, "--chains", "none,gaussian_noise(sigma=0.02)", "--threat", "patch", "--attacks", "advgan"]
    opts = ["--patch-shape", "square|glasses", "--patch-size", "0.1", "--patch-steps", "2", "--eps", "0.1"]
    small = ["--advgan-epochs", "1", "--train-limit", "20", "--fast", "--save-adversarials"]
    r = CliRunner().invoke(app, [*args, *opts, *small, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "report.json").read_text())
    rows = [*doc["patch_results"], *doc["advgan_results"]]
    # none: bpda only; the random chain: bpda, surrogate and their per-example worst
    assert len(doc["patch_results"]) == 2 * (1 + 3) and len(doc["advgan_results"]) == 1 + 3
    for row in rows:
        saved = row["verdict"]["adversarials"]["file"]
        with np.load(tmp_path / saved) as f:
            assert f["images"].dtype == np.uint8 and len(f["images"]) == len(f["labels"]) == row["n"]
        random = row["chain"] != "none"
        assert row["verdict"]["score"]["draws"] == (8 if random else 1)  # --fast: 8 scoring draws
        assert row["strict_accuracy"] <= row["robust_accuracy"]
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    assert "## Patch threats" in md and "## AdvGAN next to PGD" in md
    assert "<h2>Patch threats" in page and "<h2>AdvGAN next to PGD" in page
    res = CliRunner().invoke(app, ["replay", str(tmp_path / "report.json")])
    assert res.exit_code == 0 and "all numbers match" in res.output, res.output
    assert res.output.count("patch-glasses") == 4 and res.output.count("| advgan ") == 4
