"""Sanity checks run on every evaluation; a failure means the numbers should not be trusted as they are.

- ``gradients-finite-nonzero``: gradients through each defended model are finite and non-zero for
  every example (zero or NaN gradients are the classic sign of gradient masking).
- ``large-eps-to-chance``: at a large ε (default 0.6 > 0.5, enough to flip any pixel) the
  strongest adaptive PGD drives accuracy to chance; otherwise the attack is failing, not the model holding.
- ``more-steps-never-help``: PGD with all its steps is not beaten by PGD with a quarter of them
  beyond noise (otherwise the optimisation is broken or the step size wrong).
- ``adaptive-not-weaker-than-oblivious``: the strongest adaptive threat is at least as strong as the
  oblivious one, up to noise (single adaptive threats that are weaker, e.g. BPDA without EOT on a random
  chain, are listed in the detail).
- ``whitebox-not-weaker-than-blackbox``: the best white-box threat is at least as strong as every
  black-box one, up to noise.
- ``clean-on-same-examples``: every row's clean accuracy and robust outcomes are on the very examples
  the clean accuracy was measured on, and no example is robust without being clean-correct.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from fencebox.harness.attacks import ce_loss, loss_and_grad
from fencebox.harness.defended import DefendedClassifier
from fencebox.harness.runner import Row, Runner
from fencebox.harness.stats import noise_tolerance
from fencebox.harness.threats import THREATS, Threat
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform

ADAPTIVE = ("bpda", "eot", "bpda-eot")
BLACKBOX = ("blackbox-scores", "blackbox-label")


@dataclass
class Check:
    """One check's outcome, as in report.json's ``checks``."""

    name: str
    passed: bool
    detail: str


def gradient_check(runner: Runner, chains: dict[str, Transform], threats: list[Threat]) -> Check:
    """Gradients of CE through every defended model used are finite and non-zero per example."""
    m = min(runner.config.check_n, len(runner.images))
    x = nhwc_uint8_to_nchw_float(runner.images[:m], runner.device)
    y = torch.as_tensor(runner.labels[:m], device=runner.device)
    modes = sorted({t.gradient for t in threats if t.whitebox and t.defended} or {"bpda"})
    problems, checked = [], []
    for name, chain in chains.items():
        for mode in modes:
            k = runner.config.eot if chain.randomized else 1
            model = DefendedClassifier(
                runner.model, chain, gradient=mode, eot_samples=k, seed=runner.config.seed
            )
            _, _, g = loss_and_grad(model, x, y, ce_loss)
            norms = g.reshape(m, -1).norm(dim=1)
            finite = bool(torch.isfinite(g).all())
            zero = int((norms == 0).sum())
            checked.append(f"{name}/{mode}")
            if not finite or zero:
                problems.append(f"{name}/{mode}: finite={finite}, zero-gradient examples={zero}/{m}")
    detail = (
        "; ".join(problems) if problems else f"finite and non-zero on {m} examples for {', '.join(checked)}"
    )
    return Check("gradients-finite-nonzero", not problems, detail)


def large_eps_check(runner: Runner, chains: dict[str, Transform], clean: dict[str, np.ndarray]) -> Check:
    """At ε = check_eps, BPDA+EOT PGD must bring accuracy down to chance (within noise)."""
    eps = runner.config.check_eps
    chance = 1.0 / runner.model.num_classes
    parts, failed = [], []
    for name, chain in chains.items():
        row = runner.unit(
            name, chain, THREATS["bpda-eot"], "linf", eps, clean[name], ["pgd"], subset=runner.config.check_n
        )
        limit = chance + noise_tolerance(chance, row.n)
        parts.append(f"{name}: {row.robust_accuracy:.0%}")
        if row.robust_accuracy > limit:
            failed.append(f"{name} keeps {row.robust_accuracy:.0%} > {limit:.0%}")
    head = f"BPDA+EOT PGD at eps={eps} (chance {chance:.0%}): "
    return Check(
        "large-eps-to-chance", not failed, head + ("; ".join(failed) if failed else ", ".join(parts))
    )


def more_steps_check(runner: Runner, chains: dict[str, Transform], clean: dict[str, np.ndarray]) -> Check:
    """PGD with all its steps is never worse for the attacker than with a quarter of them (beyond noise)."""
    cfg = runner.config
    grid = cfg.grid()
    norm, eps = max(grid, key=lambda g: (g[0] == "linf", g[1]))
    few = max(2, cfg.steps // 4)
    parts, failed = [], []
    for name, chain in chains.items():
        lo = runner.unit(name, chain, THREATS["bpda-eot"], norm, eps, clean[name], ["pgd"], few, cfg.check_n)
        hi = runner.unit(
            name, chain, THREATS["bpda-eot"], norm, eps, clean[name], ["pgd"], cfg.steps, cfg.check_n
        )
        tol = noise_tolerance(lo.robust_accuracy, lo.n)
        parts.append(
            f"{name}: {few} steps {lo.robust_accuracy:.0%} -> {cfg.steps} steps {hi.robust_accuracy:.0%}"
        )
        if hi.robust_accuracy > lo.robust_accuracy + tol:
            failed.append(parts[-1])
    head = f"BPDA+EOT PGD, {norm} eps={eps}: "
    return Check("more-steps-never-help", not failed, head + "; ".join(failed if failed else parts))


def _compare(
    rows: list[Row], strong: tuple[str, ...], weak: tuple[str, ...], name: str, rule: str
) -> Check | None:
    groups: dict[tuple[str, str, float], dict[str, Row]] = defaultdict(dict)
    for r in rows:
        groups[(r.chain, r.norm, r.eps)][r.threat] = r
    failed, notes, compared = [], [], 0
    for (chain, norm, eps), by in groups.items():
        weak_rows = [by[t] for t in weak if t in by]
        strong_rows = [by[t] for t in strong if t in by]
        if not weak_rows or not strong_rows:
            continue
        strongest = min(strong_rows, key=lambda r: r.robust_accuracy)
        for s in strong_rows:
            for w in weak_rows:
                if s is not strongest and s.robust_accuracy > w.robust_accuracy + noise_tolerance(
                    w.robust_accuracy, w.n
                ):
                    notes.append(
                        f"{chain} {norm} eps={eps}: {s.threat} alone {s.robust_accuracy:.0%} > {w.threat}"
                    )
        for s in [strongest]:
            for w in weak_rows:
                compared += 1
                if s.robust_accuracy > w.robust_accuracy + noise_tolerance(w.robust_accuracy, w.n):
                    failed.append(
                        f"{chain} {norm} eps={eps}: {s.threat} {s.robust_accuracy:.0%} > {w.threat} {w.robust_accuracy:.0%}"
                    )
    if compared == 0:
        return None
    detail = "; ".join(failed) if failed else f"{rule} in all {compared} comparisons"
    if notes:
        detail += " (weaker single threats, covered by the strongest: " + "; ".join(notes) + ")"
    return Check(name, not failed, detail)


def clean_check(rows: list[Row], clean: dict[str, np.ndarray], indices: np.ndarray) -> Check:
    """Every row is on the clean-measured examples, with robust implying clean-correct."""
    failed = []
    for r in rows:
        m = r.n
        same_idx = r.per_example["index"] == indices[:m].tolist()
        same_clean = r.per_example["clean"] == clean[r.chain][:m].tolist()
        rob = np.asarray(r.per_example["robust"], dtype=bool)
        subset = not (rob & ~np.asarray(r.per_example["clean"], dtype=bool)).any()
        if not (same_idx and same_clean and subset):
            failed.append(f"{r.chain}/{r.threat}/{r.norm}/{r.eps}")
    detail = (
        "mismatch in " + ", ".join(failed) if failed else f"all {len(rows)} rows share the clean examples"
    )
    return Check("clean-on-same-examples", not failed, detail)


def run_checks(
    runner: Runner,
    chains: dict[str, Transform],
    clean: dict[str, np.ndarray],
    rows: list[Row],
    threats: list[Threat],
) -> list[Check]:
    """Run every check; checks that need rows of a threat that was not evaluated are skipped."""
    out = [gradient_check(runner, chains, threats), large_eps_check(runner, chains, clean)]
    out.append(more_steps_check(runner, chains, clean))
    for c in (
        _compare(
            rows,
            ADAPTIVE,
            ("oblivious",),
            "adaptive-not-weaker-than-oblivious",
            "adaptive <= oblivious + noise",
        ),
        _compare(
            rows,
            ("oblivious", "transfer", *ADAPTIVE),
            BLACKBOX,
            "whitebox-not-weaker-than-blackbox",
            "best white-box <= black-box + noise",
        ),
    ):
        if c is not None:
            out.append(c)
    out.append(clean_check(rows, clean, runner.indices))
    return out
