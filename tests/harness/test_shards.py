"""Shards of examples: the unit grain of distributed runs, used by the local run too."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import typer
from hypothesis import given
from hypothesis import strategies as st

from fencebox.harness import Data, EvalConfig, Options, run_evaluation
from fencebox.harness.replay import replay_report
from fencebox.harness.report import write_report
from fencebox.harness.shards import shard_bounds
from fencebox.models import load_model
from fencebox.spec import load_chain
from tests.harness.toy import toy_data, toy_model

RANDOM = "choice(k=1, transforms=[bit_depth(bits=2), bit_depth(bits=3)])"


def _timeless(doc: dict[str, Any]) -> dict[str, Any]:
    d = json.loads(json.dumps(doc))
    d.pop("environment")
    d["config"].pop("shard")
    for r in d["results"]:
        r.pop("seconds")
        for a in r["attacks"]:
            a.pop("seconds")
    for c in d["chains"]:
        c.pop("latency_ms_per_image")
    return d


@given(n=st.integers(1, 300), size=st.one_of(st.none(), st.integers(1, 400)))
def test_shards_cover_the_examples_in_order_without_overlap(n: int, size: int | None) -> None:
    bounds = shard_bounds(n, size)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(b0 == a1 for (_, b0), (a1, _) in itertools.pairwise(bounds))
    assert all(0 < b - a <= (size or n) for a, b in bounds)


def _run(shard: int | None, out: Path | None = None) -> dict[str, Any]:
    images, labels = toy_data(12)
    chains = {"bd3": load_chain("bit_depth(bits=3)"), "random": load_chain(RANDOM)}
    cfg = EvalConfig.fast(attacks=["fgsm"], eps=[0.1], steps=3, check_n=7, score_draws=3, shard=shard)
    opts = Options(threats=["oblivious", "bpda"], out=out, save_adversarials=out is not None)
    return run_evaluation(toy_model(), chains, Data(images, labels), cfg, opts)


def test_one_shard_is_exactly_the_unsharded_run(one_torch_thread: None) -> None:
    assert _timeless(_run(12)) == _timeless(_run(None))


def test_a_sharded_report_is_whole_consistent_and_replays(one_torch_thread: None, tmp_path: Path) -> None:
    """Shards of 5, 5 and 2: every row covers all 12 examples once, its aggregates are those of its
    per-example outcomes, and replay re-judges every shard on that shard's own scoring draws."""
    path = tmp_path / "toy.pt"
    torch.jit.save(torch.jit.script(toy_model().net), str(path))
    ref = f"torchscript:{path}?shape=28x28x1"
    images, labels = toy_data(12)
    chains = {"bd3": load_chain("bit_depth(bits=3)"), "random": load_chain(RANDOM)}
    cfg = EvalConfig.fast(attacks=["fgsm"], eps=[0.1], steps=3, check_n=7, score_draws=3, shard=5)
    out = tmp_path / "rep"
    opts = Options(threats=["oblivious", "bpda"], model_ref=ref, out=out, save_adversarials=True)
    doc = run_evaluation(load_model(ref), chains, Data(images, labels), cfg, opts)
    write_report(doc, out)
    assert doc["config"]["shard"] == 5
    for r in doc["results"]:
        pe = r["per_example"]
        assert pe["index"] == list(range(r["n"])) and r["n"] in (12, 7)
        assert r["robust_accuracy"] == np.mean(pe["score"])
        assert r["strict_accuracy"] == np.mean(pe["robust"])
        assert all(a["attacked"] <= r["n"] for a in r["attacks"])
        shards = r["verdict"]["score"]["shards"]
        assert [(s["start"], s["stop"]) for s in shards] == shard_bounds(r["n"], 5)
        assert len({s["seed"] for s in shards}) == len(shards)  # shards never share draws
    lines, same = replay_report(out / "report.json")
    assert same, lines


def test_a_bare_ray_flag_means_a_local_ray() -> None:
    from fencebox.cli import app

    command = typer.main.get_command(app).commands["evaluate"]  # type: ignore[attr-defined]
    base = ["--model", "builtin:mnist", "--out", "o"]
    assert command.make_context("evaluate", [*base, "--ray"]).params["ray"] == "local"
    assert command.make_context("evaluate", ["--ray", *base]).params["ray"] == "local"
    assert command.make_context("evaluate", ["--ray", "auto", *base]).params["ray"] == "auto"
    assert command.make_context("evaluate", base).params["ray"] is None
