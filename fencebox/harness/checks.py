"""Sanity checks run on every evaluation; a failure means the numbers should not be trusted as they are.

Every comparison is a one-sided test at level 0.05 on at least ``check_n`` (default 100) examples
(fewer only where the data set has fewer, which the check says):

- ``gradients-finite-nonzero``: gradients through each defended model, with every estimator the
  white-box threats use, are finite and non-zero for every example (zero or NaN gradients are the
  classic sign of gradient masking).
- ``large-eps-to-chance``: at 2x the largest ε asked for (enough to flip most pixels) PGD under
  every white-box threat, per-example worst, drives accuracy to chance; otherwise the attack is
  failing, not the model holding.
- ``more-steps-never-help``: PGD with all its steps is not beaten by PGD with a quarter of them.
- ``adaptive-not-weaker-than-oblivious``: the strongest adaptive threat is at least as strong as the
  oblivious one (single weaker adaptive threats are listed in the detail).
- ``whitebox-not-weaker-than-blackbox``: the best white-box threat (escalation included) is at
  least as strong as every black-box one; a failure here survived escalation.
- ``clean-on-same-examples``: every row is on the very examples the clean accuracy was measured on,
  and on a deterministic chain no example is robust without being clean-correct.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from fencebox.attacks.gradient import ce_loss, loss_and_grad
from fencebox.harness.defended import DefendedClassifier
from fencebox.harness.runner import Estimator, Row, Runner, worst_case
from fencebox.harness.stats import above_p_value, excess_p_value
from fencebox.harness.threats import ESCALATION, THREATS, Threat, estimators
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform

ADAPTIVE = ("bpda", "eot", "bpda-eot")
BLACKBOX = ("blackbox-scores", "blackbox-label")
WHITEBOX = ("oblivious", "transfer", *ADAPTIVE, "escalation")
ALPHA = 0.05
"""Significance level of every one-sided test."""
MIN_N = 100


@dataclass
class Check:
    """One check's outcome, as in report.json's ``checks``."""

    name: str
    passed: bool
    detail: str


@dataclass
class Gap:
    """The outcome of one strong-vs-weak comparison."""

    p_value: float

    @property
    def failed(self) -> bool:
        """Whether the strong threat is significantly weaker than the weak one (one-sided, ALPHA)."""
        return self.p_value < ALPHA


def _scores(r: Row) -> list[float]:
    return list(r.per_example.get("score", [float(b) for b in r.per_example["robust"]]))


def whitebox_gap(white: Row, black: Row) -> Gap:
    """Is the white-box row significantly less effective than the black-box one on the same examples?"""
    return Gap(excess_p_value(_scores(white), _scores(black)))


def _n_note(runner: Runner, m: int) -> str:
    if m >= MIN_N:
        return f"n = {m}"
    if m == len(runner.images):
        return f"n = {m} (fewer than {MIN_N}: the data given has only {m} examples)"
    return f"n = {m} (fewer than {MIN_N}: --check-n {runner.config.check_n}; low power)"


def gradient_check(runner: Runner, chains: dict[str, Transform], threats: list[Threat]) -> Check:
    """Gradients of CE through every defended model and estimator used are finite and non-zero per example."""
    m = min(runner.config.check_n, len(runner.images))
    x = nhwc_uint8_to_nchw_float(runner.images[:m], runner.device)
    y = torch.as_tensor(runner.labels[:m], device=runner.device)
    defended = [t for t in threats if t.whitebox and t.defended] or [THREATS["bpda"]]
    problems, checked = [], []
    for name, chain in chains.items():
        modes = sorted({e for t in defended for e in estimators(t, chain)} | {t.gradient for t in defended})
        k = runner.config.eot if chain.randomized else 1
        model = DefendedClassifier(runner.model, chain, eot_samples=k, seed=runner.config.seed)
        for mode in modes:
            _, _, g = loss_and_grad(Estimator(model, mode), x, y, ce_loss)
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


def large_eps_check(
    runner: Runner, chains: dict[str, Transform], clean: dict[str, np.ndarray], threats: list[Threat]
) -> Check:
    """At 2x the largest ε, PGD under every white-box threat (per-example worst) reaches chance."""
    eps = runner.config.large_eps()
    chance = 1.0 / runner.model.num_classes
    white = [t for t in threats if t.whitebox] or [THREATS["bpda-eot"]]
    m = min(runner.config.check_n, len(runner.images))
    parts, failed = [], []
    for name, chain in chains.items():
        rows = [runner.unit(name, chain, t, "linf", eps, clean[name], ["pgd"], subset=m) for t in white]
        worst = worst_case(runner, chain, rows) if len(rows) > 1 else rows[0]
        p = above_p_value(worst.robust_accuracy, chance, worst.n)
        each = ", ".join(f"{r.threat} {r.robust_accuracy:.0%}" for r in rows)
        parts.append(f"{name}: worst {worst.robust_accuracy:.0%} ({each})")
        if p < ALPHA:
            failed.append(f"{parts[-1]} > chance, p = {p:.3g}")
    head = f"PGD at eps={eps:g} (2x the largest eps; chance {chance:.0%}; {_n_note(runner, m)}): "
    return Check(
        "large-eps-to-chance", not failed, head + ("; ".join(failed) if failed else "; ".join(parts))
    )


def more_steps_check(runner: Runner, chains: dict[str, Transform], clean: dict[str, np.ndarray]) -> Check:
    """PGD with all its steps is never worse for the attacker than with a quarter of them (one-sided test)."""
    cfg = runner.config
    grid = cfg.grid()
    norm, eps = max(grid, key=lambda g: (g[0] == "linf", g[1]))
    few = max(2, cfg.steps // 4)
    m = min(cfg.check_n, len(runner.images))
    parts, failed = [], []
    for name, chain in chains.items():
        lo = runner.unit(name, chain, THREATS["bpda-eot"], norm, eps, clean[name], ["pgd"], few, m)
        hi = runner.unit(name, chain, THREATS["bpda-eot"], norm, eps, clean[name], ["pgd"], cfg.steps, m)
        p = excess_p_value(_scores(hi), _scores(lo))
        parts.append(
            f"{name}: {few} steps {lo.robust_accuracy:.0%} -> {cfg.steps} steps {hi.robust_accuracy:.0%}"
        )
        if p < ALPHA:
            failed.append(f"{parts[-1]} (p = {p:.3g})")
    head = f"BPDA+EOT PGD, {norm} eps={eps}, {_n_note(runner, m)}: "
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
                if s is not strongest and excess_p_value(_scores(s), _scores(w)) < ALPHA:
                    notes.append(
                        f"{chain} {norm} eps={eps}: {s.threat} alone {s.robust_accuracy:.0%} > {w.threat}"
                    )
        for w in weak_rows:
            compared += 1
            p = excess_p_value(_scores(strongest), _scores(w))
            if p < ALPHA:
                failed.append(
                    f"{chain} {norm} eps={eps}: {strongest.threat} {strongest.robust_accuracy:.0%} > "
                    f"{w.threat} {w.robust_accuracy:.0%} (one-sided p = {p:.3g}, n = {w.n})"
                )
    if compared == 0:
        return None
    detail = (
        "; ".join(failed) if failed else f"{rule} in all {compared} comparisons (one-sided, p >= {ALPHA})"
    )
    if notes:
        detail += " (weaker single threats, covered by the strongest: " + "; ".join(notes) + ")"
    return Check(name, not failed, detail)


def clean_check(
    rows: list[Row], clean: dict[str, np.ndarray], indices: np.ndarray, chains: dict[str, Transform]
) -> Check:
    """Every row is on the clean-measured examples; on deterministic chains robust implies clean-correct."""
    failed = []
    for r in rows:
        m = r.n
        same_idx = r.per_example["index"] == indices[:m].tolist()
        c = np.asarray(r.per_example["clean"], dtype=np.float64)
        same_clean = np.array_equal(c, clean[r.chain][:m])
        subset = True
        if r.chain in chains and not chains[r.chain].randomized:
            rob = np.asarray(r.per_example["robust"], dtype=bool)
            subset = not (rob & (c < 1)).any()
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
    out = [gradient_check(runner, chains, threats), large_eps_check(runner, chains, clean, threats)]
    out.append(more_steps_check(runner, chains, clean))
    for c in (
        _compare(
            rows,
            ADAPTIVE,
            ("oblivious",),
            "adaptive-not-weaker-than-oblivious",
            "adaptive <= oblivious",
        ),
        _compare(
            rows,
            WHITEBOX,
            BLACKBOX,
            "whitebox-not-weaker-than-blackbox",
            "best white-box <= black-box",
        ),
    ):
        if c is not None:
            out.append(c)
    out.append(clean_check(rows, clean, runner.indices, chains))
    return out


__all__ = ["ESCALATION", "Check", "Gap", "run_checks", "whitebox_gap"]
