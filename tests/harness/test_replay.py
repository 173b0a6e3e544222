"""Replayable verdicts: saved adversarials re-judged locally and through a running service give the same numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from fencebox.harness import Data, EvalConfig, Options, run_evaluation
from fencebox.harness.http_oracle import LocalService
from fencebox.harness.replay import replay_report
from fencebox.harness.report import write_report
from fencebox.models import load_model
from fencebox.spec import load_chain
from tests.harness.toy import toy_data, toy_model

RANDOM = "choice(k=1, transforms=[bit_depth(bits=2), bit_depth(bits=3)])"


def test_replay_prints_the_reported_numbers(tmp_path: Path) -> None:
    from fencebox.cli import app

    path = tmp_path / "toy.pt"
    torch.jit.save(torch.jit.script(toy_model().net), str(path))
    ref = f"torchscript:{path}?shape=28x28x1"
    images, labels = toy_data(12)
    chains = {"bd3": load_chain("bit_depth(bits=3)"), "random": load_chain(RANDOM)}
    cfg = EvalConfig.fast(attacks=["fgsm", "pgd"], eps=[0.1], steps=3, check_n=4, score_draws=5)
    out = tmp_path / "rep"
    opts = Options(threats=["oblivious", "bpda"], model_ref=ref, out=out, save_adversarials=True)
    doc = run_evaluation(load_model(ref), chains, Data(images, labels), cfg, opts)
    write_report(doc, out)
    saved = [r for r in doc["results"] if r["verdict"].get("adversarials")]
    assert len(saved) == 2 and all(r["threat"] == "worst-case" for r in saved)
    with np.load(out / saved[0]["verdict"]["adversarials"]["file"]) as f:
        assert f["images"].dtype == np.uint8 and f["images"].shape == images.shape

    lines, same = replay_report(out / "report.json")
    assert same, lines
    res = CliRunner().invoke(app, ["replay", str(out / "report.json")])
    assert res.exit_code == 0 and "all numbers match" in res.output, res.output

    with LocalService([("bd3", ref, "bit_depth(bits=3)", "label")]) as svc:
        lines, same = replay_report(out / "report.json", url=svc.url, routes={"random": "bd3"})
    bd3 = next(line for line in lines if line.startswith("| bd3 "))
    assert "MISMATCH" not in bd3  # deterministic chain: the service gives exactly the reported numbers
    report = json.loads((out / "report.json").read_text())
    assert report["evaluation"].startswith("smoke run")
