"""One whole evaluation: clean accuracy and latency per chain, every unit, worst-case rows, escalation, checks.

:func:`run_evaluation` is the library call (``fencebox.harness.run_evaluation(model, chains, data,
config)``); the ``fencebox evaluate`` command only parses strings and calls it.  :func:`evaluate`
returns the report document (the dict written as report.json; schema in docs/harness.md).
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fencebox.errors import ConfigError
from fencebox.harness.checks import run_checks, whitebox_gap
from fencebox.harness.distributed import prefetch_on_ray, ray_config
from fencebox.harness.runner import EvalConfig, OracleFactory, Row, Runner, worst_case
from fencebox.harness.shards import ShardedRunner
from fencebox.harness.stats import wilson
from fencebox.harness.threats import ESCALATION, THREATS, Threat, parse_threats
from fencebox.harness.verdict import save_candidates
from fencebox.models.base import Classifier
from fencebox.transforms.base import Transform

SCHEMA = "fencebox.harness.report/2"

Progress = Callable[[str], None]


def environment(device: str) -> dict[str, Any]:
    """The software and hardware the numbers were measured on."""
    import torch

    import fencebox

    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "fencebox": fencebox.__version__,
        "device": device,
        "cuda": torch.cuda.get_device_name(0)
        if device.startswith("cuda") and torch.cuda.is_available()
        else None,
    }


def save_adversarials(folder: Path, i: int, row: Row) -> dict[str, Any]:
    """Write an L-inf/L2 row's final adversarials (:func:`save_candidates`); return its record."""
    assert row.adversarials is not None
    labels, index = row.per_example["label"], row.per_example["index"]
    return save_candidates(folder, f"{i:03d}-{row.norm}-{row.eps:g}.npz", row.adversarials, labels, index)


def evaluate(
    runner: Runner,
    chains: dict[str, Transform],
    threats: list[Threat],
    config: dict[str, Any],
    progress: Progress | None = None,
    save_to: Path | None = None,
) -> dict[str, Any]:
    """Run every (chain, threat, norm, ε) unit, escalate where black-box beats white-box, run the checks.

    ``save_to``: a folder to write each group's final adversarials into (``--save-adversarials``).
    """
    tick = progress or (lambda _msg: None)
    grid = runner.config.grid()
    clean: dict[str, np.ndarray] = {}
    chain_info: list[dict[str, Any]] = []
    rows: list[Row] = []
    escalations: list[str] = []
    saved = 0
    for name, chain in chains.items():
        tick(f"{name}: clean accuracy and latency")
        clean[name] = runner.clean(name, chain)
        c = clean[name]
        chain_info.append(
            {
                "name": name,
                "spec": str(chain),
                "randomized": bool(chain.randomized),
                "surrogate_kind": chain.surrogate_kind,
                "latency_ms_per_image": runner.latency_ms(chain),
                "clean_accuracy": float(c.mean()),
                "clean_strict_accuracy": float((c == 1).mean()),
                "clean_ci95": list(wilson(round(float(c.sum())), c.size)),
            }
        )
        for norm, eps in grid:
            group = []
            for threat in threats:
                tick(f"{name}: {threat.name} {norm} eps={eps}")
                group.append(runner.unit(name, chain, threat, norm, eps, c))
            if runner.config.escalate:
                extra = _escalate(runner, name, chain, norm, eps, c, group, tick)
                if extra is not None:
                    escalations.append(f"{name} {norm} eps={eps}")
                    group.append(extra)
            if not group:  # no L-inf threat asked for (e.g. only --threat patch): nothing to combine
                continue
            final = worst_case(runner, chain, group) if len(group) > 1 else group[0]
            if save_to is not None:
                final.verdict = {**final.verdict, "adversarials": save_adversarials(save_to, saved, final)}
                saved += 1
            rows.extend(group)
            if len(group) > 1:
                rows.append(final)
    # The checks test the L-inf/L2 rows' attacks; a run without them (only patch or AdvGAN rows,
    # e.g. a later run to merge into a report) has nothing for them to check, and they cost as
    # much as a small evaluation.
    checks = []
    if rows:
        tick("checks")
        checks = run_checks(runner, chains, clean, [r for r in rows if r.threat != "worst-case"], threats)
    return {
        "schema": SCHEMA,
        "config": {
            **config,
            "eps_levels": {str(e): int(np.floor(255 * e + 1e-6)) for e in runner.config.eps},
        },
        "evaluation": "smoke run (--fast): NOT an evaluation" if runner.config.smoke else "evaluation",
        "environment": environment(config.get("device", "cpu")),
        "model": runner.model.card.to_dict(),
        "chains": chain_info,
        "escalations": escalations,
        "checks": [asdict(c) for c in checks],
        "all_checks_passed": all(c.passed for c in checks),
        "results": [r.to_dict() for r in rows],
    }


def _escalate(
    runner: Runner,
    name: str,
    chain: Transform,
    norm: str,
    eps: float,
    clean: np.ndarray,
    group: list[Row],
    tick: Progress,
) -> Row | None:
    """When a black-box threat beats every white-box one, attack again from its adversarials.

    White-box APGD-CE and PGD start from the black-box row's selected candidates, with both gradient
    estimators, twice the EOT draws and twice the restarts; the result is a row of its own.
    """
    worst_black = escalation_source(runner, chain, group)
    if worst_black is None:
        return None
    tick(f"{name}: escalation from {worst_black.threat} {norm} eps={eps}")
    return runner.unit(name, chain, ESCALATION, norm, eps, clean, ["apgd-ce", "pgd"], start=worst_black)


def escalation_source(runner: Runner, chain: Transform, group: list[Row]) -> Row | None:
    """The black-box row to escalate from, when the worst black-box threat beats every white-box one."""
    white = [r for r in group if THREATS.get(r.threat, ESCALATION).whitebox]
    black = [r for r in group if not THREATS.get(r.threat, ESCALATION).whitebox]
    if not white or not black:
        return None
    worst_black = min(black, key=lambda r: r.robust_accuracy)
    best_white = worst_case(runner, chain, white, threat="white-box") if len(white) > 1 else white[0]
    return worst_black if whitebox_gap(best_white, worst_black).failed else None


@dataclass
class Data:
    """The examples to evaluate: uint8 NHWC images, labels, and their indices in the data set."""

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray | None = None
    name: str = "data"


@dataclass
class Options:
    """How to run beyond :class:`EvalConfig`: threats, source model, oracle, output folder, description."""

    threats: list[str] = field(default_factory=lambda: ["all"])
    model_ref: str = "model"
    source: Classifier | None = None
    source_ref: str | None = None
    oracle_factory: OracleFactory | None = None
    oracle: str = "a local oracle (in-process serving path, same output-policy semantics)"
    out: Path | None = None
    save_adversarials: bool = False
    device: str = "cpu"
    ray: str | None = None
    """Run the units as Ray tasks: ``"local"`` starts a local Ray, else a cluster address (``auto``, host:port)."""
    on_total: Callable[[int], None] | None = None
    """Told the number of progress steps when a Ray run knows it (the CLI's bar length)."""


def run_evaluation(
    model: Classifier,
    chains: dict[str, Transform],
    data: Data,
    config: EvalConfig | None = None,
    options: Options | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Evaluate ``chains`` in front of ``model`` on ``data``: the same report document the CLI writes.

    With ``options.out`` the cache lives in ``out/cache`` and ``--save-adversarials`` files in
    ``out/adversarials``; the caller writes the report files (:func:`fencebox.harness.report.write_report`).
    """
    cfg = config or EvalConfig()
    opt = options or Options()
    threats = parse_threats(opt.threats)
    if opt.ray is not None:
        if opt.oracle_factory is not None:
            raise ConfigError("--ray runs black-box threats on the in-process oracle; use --service local")
        cfg = ray_config(cfg, cfg.shard)
    make = Runner if cfg.shard is None else ShardedRunner
    runner = make(
        model,
        data.images,
        data.labels,
        cfg,
        model_ref=opt.model_ref,
        source=opt.source,
        source_ref=opt.source_ref,
        cache_dir=None if opt.out is None else opt.out / "cache",
        oracle_factory=opt.oracle_factory,
        indices=data.indices,
    )
    doc_config = {
        "model": opt.model_ref,
        "data": data.name,
        "n": len(data.images),
        "index": runner.indices.tolist(),
        "chains": list(chains),
        "chain_specs": {k: str(v) for k, v in chains.items()},
        "threats": [t.name for t in threats],
        "attacks": cfg.attacks,
        "eps": cfg.eps,
        "eps_l2": cfg.eps_l2,
        "steps": cfg.steps,
        "restarts": cfg.restarts,
        "eot": cfg.eot,
        "queries": cfg.queries,
        "seed": cfg.seed,
        "select_draws": cfg.select_draws,
        "score_draws": cfg.score_draws,
        "device": opt.device,
        "source": opt.source_ref or opt.model_ref,
        "oracle": opt.oracle,
        "check_n": cfg.check_n,
        "check_eps": cfg.large_eps(),
        "batch": cfg.batch,
        "smoke": cfg.smoke,
        "shard": cfg.shard,
    }
    save_to = opt.out / "adversarials" if (opt.save_adversarials and opt.out is not None) else None
    if opt.ray is None or not isinstance(runner, ShardedRunner):
        return evaluate(runner, chains, threats, doc_config, progress, save_to)
    cluster = prefetch_on_ray(
        runner,
        chains,
        threats,
        opt.ray,
        escalation_source,
        opt.model_ref,
        opt.device,
        progress,
        opt.on_total,
    )
    if progress is not None:
        progress("scoring, worst cases and checks on the driver")
    doc = evaluate(runner, chains, threats, doc_config, None, save_to)
    doc["environment"]["cluster"] = {**cluster, "driver_units": runner.driver_units}
    return doc


def count_units(chains: dict[str, Transform], threats: list[Threat], grid: list[tuple[str, float]]) -> int:
    """How many progress steps :func:`evaluate` reports (units, one clean step per chain, the checks)."""
    units = len(threats) * len(grid)
    return len(chains) * (units + 1) + (1 if units else 0)
