"""The evaluate command: one error path (exit 2, message on stderr) and no advice the user already took."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fencebox.cli import app
from fencebox.harness.commands import limit_training
from fencebox.models import load_dataset
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


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


@pytest.mark.parametrize(("extra", "pgd_steps"), [([], 2), (["--advgan-pgd-steps", "0"], 0)])
def test_advgan_column_next_to_pgd(tmp_path: Path, extra: list[str], pgd_steps: int) -> None:
    args = [*FACES, "--threat", "bpda", "--attacks", "pgd,advgan", "--eps", "0.1", "--steps", "2"]
    opts = ["--advgan-epochs", "1", "--train-limit", "40", "--fast", *extra]
    r = CliRunner().invoke(app, [*args, *opts, "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "report.json").read_text())
    (row,) = doc["advgan_results"]
    assert row["levels"] == 25 and row["pgd_steps"] == pgd_steps and row["images_per_s"] > 0
    assert (row["pgd_images_per_s"] is None) == (pgd_steps == 0)  # 0: no PGD beside AdvGAN
    assert doc["config"]["train_images"] == 40 and doc["config"]["advgan_epochs"] == 1
    spec = importlib.util.spec_from_file_location(
        "summarize", Path(__file__).parents[2] / "scripts/summarize_reports.py"
    )
    assert spec is not None and spec.loader is not None
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    table = summarize.summarize(tmp_path)  # the reports' summary table gets an advgan column
    assert "| chain | clean | eps | bpda | advgan |" in table
    assert f"| {_pct(row['robust_accuracy'])} |\n" in table and "1 epoch(s) on 40 training images" in table
    assert "## AdvGAN next to PGD" in (tmp_path / "report.md").read_text()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-d", "builtin:mnist-test", "-m", "builtin:mnist", "--patch-shape", "glasses"], "eye line"),
        (["--patch-size", "2"], "larger than the image"),
        (["--patch-shape", "circle"], "unknown patch shape"),
        (["--attacks", "advgan", "--advgan-pgd-steps", "-1"], "--advgan-pgd-steps must be >= 0"),
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


@pytest.mark.parametrize("limit", [10, 37, 400])
def test_train_limit_keeps_every_class_of_a_sorted_training_split(limit: int) -> None:
    x, y = load_dataset("builtin:mnist-train")
    assert (np.diff(y) >= 0).all()  # sorted by class: the first images are all 0s
    xs, ys = limit_training((x, y), limit)
    assert len(ys) == len(xs) == limit and set(ys.tolist()) == set(range(10))
    for xi, yi in zip(xs, ys, strict=True):  # each kept image keeps its own label
        assert (x[y == yi] == xi).all(axis=(1, 2, 3)).any()


def _script(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[2] / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_advgan_rows_of_a_later_run_merge_into_a_report_and_replay(tmp_path: Path) -> None:
    """scripts/merge_report_rows.py: the rows of an AdvGAN-only run on the same examples join the
    report (adversarials and provenance included), replay re-judges them, and a run that differs in
    anything deciding a number is refused."""
    base, later, other = tmp_path / "base", tmp_path / "later", tmp_path / "other"
    common = [*FACES, "--eps", "0.1", "--fast", "--save-adversarials"]
    gan = ["--attacks", "advgan", "--advgan-epochs", "1", "--train-limit", "20", "--advgan-pgd-steps", "0"]
    runs = [
        (base, [*common, "--threat", "bpda", "--attacks", "pgd", "--steps", "2"]),
        (later, [*common, "--threat", "oblivious", *gan]),
        (other, [*FACES, "--eps", "0.2", "--fast", "--threat", "oblivious", *gan]),
    ]
    for out, args in runs:
        r = CliRunner().invoke(app, [*args, "--out", str(out)])
        assert r.exit_code == 0, r.output
    assert json.loads((later / "report.json").read_text())["checks"] == []  # no L-inf rows to check
    merge = _script("merge_report_rows")
    doc = merge.merge(base, later, "advgan_results", "a later run")
    assert len(doc["advgan_results"]) == 1 and doc["results"]  # the report keeps its own rows
    assert doc["config"]["advgan_epochs"] == 1 and doc["config"]["merged"][0]["rows"] == "advgan_results"
    assert (base / doc["advgan_results"][0]["verdict"]["adversarials"]["file"]).exists()
    md = (base / "report.md").read_text()
    assert "merged into this report with scripts/merge_report_rows.py: a later run" in md
    res = CliRunner().invoke(app, ["replay", str(base / "report.json")])
    assert res.exit_code == 0 and "all numbers match" in res.output, res.output
    assert "| advgan " in res.output
    before = (base / "report.json").read_text()
    with pytest.raises(SystemExit, match=r"eps: report \[0.1\], run \[0.2\]"):
        merge.merge(base, other, "advgan_results", None)
    with pytest.raises(SystemExit, match=r"no report\.json in"):
        merge.merge(base, tmp_path / "nowhere", "advgan_results", None)
    saved = later / doc["advgan_results"][0]["verdict"]["adversarials"]["file"]
    saved.unlink()
    with pytest.raises(SystemExit, match="is missing: the run's saved adversarials must come with it"):
        merge.merge(base, later, "advgan_results", None)
    assert (base / "report.json").read_text() == before  # a refused merge writes nothing
