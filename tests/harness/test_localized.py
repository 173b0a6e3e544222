"""Patch and AdvGAN rows over several chains, with both gradient estimators, and their Markdown tables."""

from __future__ import annotations

import pytest

from fencebox import load_chain
from fencebox.errors import ConfigError
from fencebox.harness.localized import (
    advgan_rows,
    estimators,
    parse_patch_shapes,
    patch_rows,
    train_split_of,
)
from fencebox.harness.report import advgan_markdown, patch_markdown
from fencebox.models import load_dataset, load_model
from tests.harness.toy import toy_data, toy_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_estimators_follow_the_chain() -> None:
    assert estimators(load_chain("none"), 8) == [("bpda", 1)]
    assert estimators(load_chain("median(size=3)"), 8) == [("bpda", 1), ("surrogate", 1)]
    assert estimators(load_chain("gaussian_noise()"), 8) == [("bpda", 8), ("surrogate", 8)]


def test_patch_rows_on_faces_cover_every_chain_shape_and_estimator() -> None:
    model = load_model("builtin:faces", device="cpu")
    test, train = load_dataset("builtin:faces-test"), load_dataset("builtin:faces-train")
    chains = {"none": load_chain("none"), "median": load_chain("median(size=3)")}
    rows = patch_rows(
        model,
        "builtin:faces",
        "builtin:faces-test",
        test,
        train,
        chains,
        ["square", "glasses"],
        [0.05, 0.1],
        steps=2,
    )
    # (none: bpda; median: bpda + surrogate + their per-example worst) x (two squares + glasses)
    assert len(rows) == (1 + 3) * 3
    assert {r["threat"] for r in rows} == {"patch-square", "patch-glasses"}
    assert all("eps" not in r and r["n"] == 25 for r in rows)  # no ε; only the 25 test faces
    text = patch_markdown(rows)
    assert text.count("\n| median |") == 9 and "not part of the L∞ worst case" in text
    # median is deterministic: one draw, and the worst row is never better than either estimator's
    for i in range(0, len(rows), 1):
        if rows[i]["gradient"].startswith("worst"):
            bpda, sur, worst = rows[i - 2], rows[i - 1], rows[i]
            assert worst["verdict"]["score"]["draws"] == 1
            assert worst["robust_accuracy"] <= min(bpda["robust_accuracy"], sur["robust_accuracy"])
            assert worst["per_example"]["score"] == [
                min(a, b)
                for a, b in zip(bpda["per_example"]["score"], sur["per_example"]["score"], strict=True)
            ]


def test_bad_patch_arguments_fail_before_any_work() -> None:
    model = toy_model()
    x, y = toy_data(5)
    chains = {"none": load_chain("none")}
    with pytest.raises(ConfigError, match="eye line"):
        patch_rows(model, "toy", "builtin:mnist-test", (x, y), (x, y), chains, ["glasses"], [0.05])
    with pytest.raises(ConfigError, match="larger than the"):
        patch_rows(model, "toy", "builtin:mnist-test", (x, y), (x, y), chains, ["square"], [1.0 + 1e-9])
    with pytest.raises(ConfigError, match="share of the image area"):
        patch_rows(model, "toy", "builtin:mnist-test", (x, y), (x, y), chains, ["square"], [0.0])
    with pytest.raises(ConfigError, match="unknown patch shape"):
        parse_patch_shapes("square,circle")
    assert parse_patch_shapes("square|glasses") == ["square", "glasses"]
    with pytest.raises(ConfigError, match="training split"):
        train_split_of("npz:/tmp/data.npz")
    assert train_split_of("builtin:faces-test") == "builtin:faces-train"


def test_advgan_rows_put_pgd_beside_advgan() -> None:
    model = toy_model()
    x, y = toy_data(100)
    chains = {"none": load_chain("none"), "median": load_chain("median(size=3)")}
    rows = advgan_rows(
        model, "toy", (x[80:], y[80:]), (x[:80], y[:80]), chains, [0.1, 0.2], epochs=1, pgd_steps=2
    )
    assert len(rows) == (1 + 3) * 2 and {r["levels"] for r in rows} == {25, 51}
    per_estimator = [r for r in rows if not r["gradient"].startswith("worst")]
    assert len(per_estimator) == (1 + 2) * 2
    assert all(r["pgd_success_rate"] is not None and r["images_per_s"] > 0 for r in per_estimator)
    assert advgan_markdown(rows).count("\n| median |") == 6
