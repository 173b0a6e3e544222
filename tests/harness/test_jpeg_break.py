"""End to end: the harness breaks JPEG in front of the adversarially trained model (issue 10's case).

An earlier harness, whose JPEG surrogate had an identity gradient, reported 44% robust accuracy for
``builtin:mnist-adv`` + ``guo2018-jpeg`` at eps 0.3; an independent attack with a real differentiable JPEG
broke it to 0%.  This test runs the harness's own white-box threat on a small slice and asserts that the
surrogate gradient is what breaks it: identity BPDA alone leaves most digits standing, the threat (which
tries both estimators and keeps the per-example worst) does not.
"""

from __future__ import annotations

import torch

from fencebox.harness.evaluate import evaluate
from fencebox.harness.runner import EvalConfig, Runner
from fencebox.harness.threats import parse_threats
from fencebox.models import load_dataset, load_model
from fencebox.spec import load_chain

N = 24


def test_bpda_threat_with_the_jpeg_surrogate_breaks_mnist_adv_behind_jpeg() -> None:
    torch.set_num_threads(1)
    images, labels = load_dataset("builtin:mnist-test")
    model = load_model("builtin:mnist-adv", device="cpu")
    cfg = EvalConfig(
        attacks=["apgd-ce"], eps=[0.3], steps=100, restarts=1, eot=1, check_n=N, select_draws=1, score_draws=1
    )
    runner = Runner(model, images[:N], labels[:N], cfg, model_ref="builtin:mnist-adv")
    doc = evaluate(
        runner, {"jpeg": load_chain("guo2018-jpeg")}, parse_threats(["bpda"]), {"model": "mnist-adv"}
    )
    row = next(r for r in doc["results"] if r["threat"] == "bpda")
    assert row["clean_accuracy"] >= 0.9, row
    # the committed report claimed 0.44 at this eps; measured here: 2 of 24 survive (identity BPDA alone: 19 of 23)
    assert row["robust_accuracy"] <= 0.25, row
    broke = {a["gradient"]: a["broke"] for a in row["attacks"]}
    assert broke["surrogate"] > broke["bpda"], broke  # the surrogate's gradient is what breaks JPEG
