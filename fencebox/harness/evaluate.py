"""One whole evaluation: clean accuracy and latency per chain, every unit, worst-case rows, checks.

Returns the report document (the dict written as report.json; schema in docs/harness.md).
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from fencebox.harness.checks import run_checks
from fencebox.harness.runner import Row, Runner, worst_case
from fencebox.harness.stats import wilson
from fencebox.harness.threats import Threat
from fencebox.transforms.base import Transform

SCHEMA = "fencebox.harness.report/1"

Progress = Callable[[str], None]


def count_units(chains: dict[str, Transform], threats: list[Threat], grid: list[tuple[str, float]]) -> int:
    """How many progress steps :func:`evaluate` reports (units plus one per chain for clean and checks)."""
    return len(chains) * (len(threats) * len(grid) + 2)


def environment(device: str) -> dict[str, Any]:
    """The software and hardware the numbers were measured on."""
    import os

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


def evaluate(
    runner: Runner,
    chains: dict[str, Transform],
    threats: list[Threat],
    config: dict[str, Any],
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run every (chain, threat, norm, ε) unit and the checks; return the report document."""
    tick = progress or (lambda _msg: None)
    grid = runner.config.grid()
    clean: dict[str, np.ndarray] = {}
    chain_info: list[dict[str, Any]] = []
    rows: list[Row] = []
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
                "clean_ci95": list(wilson(int(c.sum()), c.size)),
            }
        )
        for norm, eps in grid:
            group = []
            for threat in threats:
                tick(f"{name}: {threat.name} {norm} eps={eps}")
                group.append(runner.unit(name, chain, threat, norm, eps, c))
            rows.extend(group)
            if len(group) > 1:
                rows.append(worst_case(group))
    checks = []
    for name in chains:
        tick(f"{name}: checks")
    checks = run_checks(runner, chains, clean, [r for r in rows if r.threat != "worst-case"], threats)
    return {
        "schema": SCHEMA,
        "config": config,
        "environment": environment(config.get("device", "cpu")),
        "model": runner.model.card.to_dict(),
        "chains": chain_info,
        "checks": [asdict(c) for c in checks],
        "all_checks_passed": all(c.passed for c in checks),
        "results": [r.to_dict() for r in rows],
    }
