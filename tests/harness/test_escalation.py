"""Escalation: when black-box beats white-box, the harness re-attacks from the black-box adversarials."""

from __future__ import annotations

import torch
from torch import nn

from fencebox.harness.evaluate import evaluate
from fencebox.harness.runner import EvalConfig, Runner
from fencebox.harness.threats import parse_threats
from fencebox.spec import load_chain
from tests.harness.toy import ToyMnist, toy_data, toy_model


def _useless_source() -> ToyMnist:
    """An untrained MLP: its gradients say nothing about the target, so transfer is weak."""
    torch.manual_seed(123)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    for p in net.parameters():
        p.requires_grad_(False)
    return ToyMnist(net)


def test_a_blackbox_win_triggers_escalation_and_the_check_reports_it() -> None:
    images, labels = toy_data(24)
    cfg = EvalConfig.fast(attacks=["fgsm"], eps=[0.15], steps=4, queries=300, check_n=8, score_draws=2)
    runner = Runner(toy_model(), images, labels, cfg, source=_useless_source(), source_ref="untrained")
    threats = parse_threats(["transfer", "blackbox-scores"])
    doc = evaluate(runner, {"none": load_chain("none")}, threats, {"model": "toy"})
    by = {r["threat"]: r for r in doc["results"]}
    assert by["blackbox-scores"]["robust_accuracy"] < by["transfer"]["robust_accuracy"]
    assert doc["escalations"] == ["none linf eps=0.15"]
    esc = by["escalation"]
    assert esc["robust_accuracy"] <= by["blackbox-scores"]["robust_accuracy"]  # started from its adversarials
    assert {a["name"] for a in esc["attacks"]} == {"apgd-ce", "pgd"}
    assert by["worst-case"]["robust_accuracy"] <= esc["robust_accuracy"]
    check = next(c for c in doc["checks"] if c["name"] == "whitebox-not-weaker-than-blackbox")
    assert check["passed"], check["detail"]
