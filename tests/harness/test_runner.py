"""Runner, checks, reports and the ``fencebox evaluate`` command, on the toy model with tiny settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fencebox.harness import runner as runner_mod
from fencebox.harness.checks import _compare, gradient_check
from fencebox.harness.evaluate import evaluate
from fencebox.harness.report import to_markdown, write_report
from fencebox.harness.runner import EvalConfig, Row, Runner, parse_attacks, worst_case
from fencebox.harness.stats import wilson
from fencebox.harness.threats import THREATS, parse_threats
from fencebox.spec import load_chain
from fencebox.transforms.base import Params, Transform
from tests.harness.toy import toy_data, toy_model


class FlatSurrogate(Transform):
    """A masking 'defence' whose surrogate has zero gradient: the gradient check must catch it."""

    name = "test_flat"
    surrogate_kind = "exact"

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        return images

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        return x.detach()


def _runner(tmp_path: Path | None, n: int = 16, **kw: Any) -> Runner:
    images, labels = toy_data(n)
    kw = {"restarts": 1, "select_draws": 3, "score_draws": 5, **kw}
    cfg = EvalConfig(attacks=["fgsm", "pgd"], eps=[0.3], steps=8, eot=4, queries=60, check_n=8, **kw)
    return Runner(toy_model(), images, labels, cfg, model_ref="toy", cache_dir=tmp_path)


def test_names_and_aliases_resolve() -> None:
    assert parse_attacks(["apgd", "pgd"]) == ["apgd-ce", "apgd-dlr", "pgd"]
    assert [t.name for t in parse_threats(["blackbox", "oblivious"])] == [
        "blackbox-scores",
        "blackbox-label",
        "oblivious",
    ]
    with pytest.raises(ValueError, match="unknown threat"):
        parse_threats(["psychic"])


def test_robust_is_worst_case_and_implies_clean(tmp_path: Path) -> None:
    r = _runner(tmp_path)
    chain = load_chain("none")
    clean = r.clean("none", chain)
    row = r.unit("none", chain, THREATS["bpda"], "linf", 0.3, clean)
    assert row.robust_accuracy <= 0.1 < row.clean_accuracy  # an undefended model falls at eps 0.3
    rob = np.asarray(row.per_example["robust"])
    assert not (rob & (clean < 1)).any()  # clean: fraction of scoring draws correct
    assert [a.name for a in row.attacks] == ["fgsm", "pgd"]
    assert sum(a.broke for a in row.attacks) == int(clean.sum() - rob.sum())
    assert row.ci95 == wilson(int(rob.sum()), row.n)


def test_cache_resumes_without_rerunning_attacks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = load_chain("bit_depth(bits=2)")
    r = _runner(tmp_path)
    clean = r.clean("b2", chain)
    first = r.unit("b2", chain, THREATS["oblivious"], "linf", 0.3, clean)

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cached unit ran an attack again")

    monkeypatch.setattr(runner_mod, "_run_whitebox", boom)
    again = _runner(tmp_path).unit("b2", chain, THREATS["oblivious"], "linf", 0.3, clean)
    assert again.per_example == first.per_example
    with pytest.raises(AssertionError, match="ran an attack"):  # a changed config is a new key
        _runner(tmp_path, restarts=2).unit("b2", chain, THREATS["oblivious"], "linf", 0.3, clean)


def test_gradient_check_flags_a_masking_surrogate() -> None:
    r = _runner(None)
    chains = {"flat": load_chain("none"), "masked": FlatSurrogate()}
    check = gradient_check(r, chains, [THREATS["eot"]])
    assert not check.passed and "masked/surrogate" in check.detail and "flat/" not in check.detail


def _row(threat: str, robust: float, n: int = 100) -> Row:
    k = round(robust * n)
    return Row(
        "c",
        "c",
        threat,
        "linf",
        0.3,
        n,
        1.0,
        robust,
        wilson(k, n),
        [],
        {"kind": "none"},
        0.0,
        {
            "index": list(range(n)),
            "clean": [True] * n,
            "robust": [i < k for i in range(n)],
            "broken_by": [None] * n,
            "label": [0] * n,
            "queries": [0] * n,
        },
    )


def test_adaptive_weaker_than_oblivious_is_flagged() -> None:
    ok = _compare([_row("oblivious", 0.5), _row("bpda", 0.45)], ("bpda",), ("oblivious",), "x", "rule")
    bad = _compare([_row("oblivious", 0.2), _row("bpda", 0.6)], ("bpda",), ("oblivious",), "x", "rule")
    assert ok is not None and ok.passed
    assert bad is not None and not bad.passed and "bpda 60% > oblivious 20%" in bad.detail
    both = [_row("oblivious", 0.2), _row("bpda", 0.6), _row("bpda-eot", 0.1)]
    noted = _compare(both, ("bpda", "bpda-eot"), ("oblivious",), "x", "rule")
    assert noted is not None and noted.passed and "bpda alone 60% > oblivious" in noted.detail


def test_worst_case_takes_the_per_example_worst_candidate() -> None:
    r = _runner(None)
    chain = load_chain("bit_depth(bits=2)")
    clean = r.clean("b2", chain)
    rows = [r.unit("b2", chain, THREATS[t], "linf", 0.1, clean, ["fgsm"]) for t in ("oblivious", "bpda")]
    worst = worst_case(r, chain, rows)
    either = np.asarray(rows[0].per_example["robust"]) & np.asarray(rows[1].per_example["robust"])
    assert worst.per_example["robust"] == either.tolist()  # deterministic: worst case = AND over threats
    assert worst.robust_accuracy <= min(x.robust_accuracy for x in rows)


def test_evaluate_writes_reports_with_checks(tmp_path: Path) -> None:
    r = _runner(tmp_path / "cache", n=12)
    chains = {"none": load_chain("none"), "bd1": load_chain("bit_depth(bits=1)")}
    threats = parse_threats(["oblivious", "bpda-eot", "blackbox-scores"])
    doc = evaluate(r, chains, threats, {"model": "toy", "n": 12})
    names = [c["name"] for c in doc["checks"]]
    assert names == [
        "gradients-finite-nonzero",
        "large-eps-to-chance",
        "more-steps-never-help",
        "adaptive-not-weaker-than-oblivious",
        "whitebox-not-weaker-than-blackbox",
        "clean-on-same-examples",
    ]
    keys = {
        "chain",
        "threat",
        "eps",
        "n",
        "clean_accuracy",
        "robust_accuracy",
        "ci95",
        "attacks",
        "queries",
        "seconds",
        "per_example",
    }
    assert all(keys <= set(row) for row in doc["results"])
    assert {r["threat"] for r in doc["results"]} == {"oblivious", "bpda-eot", "blackbox-scores", "worst-case"}
    paths = write_report(doc, tmp_path / "out")
    assert json.loads(paths["json"].read_text())["schema"] == "fencebox.harness.report/2"
    assert "data:image/png;base64," in paths["html"].read_text()
    doc["checks"][0]["passed"] = False
    assert "SANITY CHECK(S) FAILED" in to_markdown(doc)


def test_cli_evaluate_end_to_end(tmp_path: Path) -> None:
    from fencebox.cli import app

    model = toy_model()
    torch.jit.save(torch.jit.script(model.net), str(tmp_path / "toy.pt"))
    images, labels = toy_data(10)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    args = [
        "evaluate",
        "--model",
        f"torchscript:{tmp_path / 'toy.pt'}?shape=28x28x1",
        "--data",
        f"npz:{tmp_path / 'd.npz'}",
        "-n",
        "6",
        "--chains",
        "none,choice(k=1, transforms=[bit_depth(bits=2), bit_depth(bits=3)])",
        "--threat",
        "oblivious,bpda",
        "--attacks",
        "fgsm",
        "--eps",
        "0.3",
        "--steps",
        "4",
        "--eot",
        "2",
        "--check-n",
        "4",
        "--fast",
        "--out",
        str(tmp_path / "rep"),
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert doc["config"]["n"] == 6 and len(doc["chains"]) == 2
    bad = CliRunner().invoke(app, [*args[:-2], "--eps", "x", "--out", str(tmp_path / "r2")])
    assert bad.exit_code == 2 and "--eps must be comma-separated numbers" in bad.output


def test_cli_helpers_split_specs_and_select_examples() -> None:
    from fencebox.harness.commands import select_indices, split_list

    assert split_list("none, choice(k=1, transforms=[a(), b(q=[1, 2])]),jpeg") == [
        "none",
        "choice(k=1, transforms=[a(), b(q=[1, 2])])",
        "jpeg",
    ]
    assert select_indices(1000, 4, "first").tolist() == [0, 1, 2, 3]
    assert select_indices(1000, 4, "spread").tolist() == [0, 250, 500, 750]
    assert select_indices(3, 10, "first").tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="--select"):
        select_indices(10, 2, "random")
