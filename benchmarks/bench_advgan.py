"""What ``fencebox evaluate --attacks ...,advgan`` adds per (model, chain): AdvGAN training, PGD beside it, judging.

Calls :func:`fencebox.harness.localized.advgan_rows` exactly as ``fencebox evaluate`` does (same
arguments: the run's ε list, EOT, steps as the PGD comparison's steps, verdict draws; ``--train-limit``
as a class-spread subset of the training split) with no cache, so every generator is trained, and
times each (model, chain) on one torch thread:

  python benchmarks/bench_advgan.py [--models builtin:mnist builtin:mnist-adv]
      [--chains none fencebox-default guo2018-jpeg] [-n 100] [--eps 0.1 0.2 0.3] [--eot 10]
      [--steps 20] [--epochs 1] [--train-limit 500] [--out bench-advgan.json]
  python benchmarks/bench_advgan.py --table RUN.json...     # one Markdown table of several runs

Per (model, chain) it prints the wall and process-CPU seconds of the whole call and their parts: the
generators' training (``train_seconds`` of the estimator rows), the PGD comparison (attacked images /
PGD images per second) and the rest (generation, selection and scoring draws, the worst rows), plus
training seconds per (training image x epoch), which is what ``--advgan-epochs`` and ``--train-limit``
scale.  Numbers are only comparable on the same machine and load.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from fencebox import load_chain
from fencebox.harness.commands import limit_training
from fencebox.harness.judged import VerdictConfig
from fencebox.harness.localized import advgan_rows, estimators
from fencebox.models import load_dataset, load_model


def measure(model_ref: str, chain_name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Time one (model, chain) advgan_rows call and split it into training, PGD and the rest."""
    model = load_model(model_ref, device="cpu")
    x, y = load_dataset("builtin:mnist-test")
    test = (x[: args.n], y[: args.n])
    train = load_dataset("builtin:mnist-train")
    train = limit_training(train, args.train_limit) if args.train_limit else train
    chain = load_chain(chain_name)
    verdict = VerdictConfig(seed=0, select_draws=args.select_draws, score_draws=args.score_draws)
    wall, cpu = time.perf_counter(), time.process_time()
    rows = advgan_rows(
        model, model_ref, test, train, {chain_name: chain}, args.eps, args.eot, args.steps,
        args.epochs, 0, None, None, verdict,
    )  # fmt: skip
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    own = [r for r in rows if not str(r["gradient"]).startswith("worst of")]
    train_s = sum(r["train_seconds"] for r in own)
    pgd_s = sum(r["attacked"] / r["pgd_images_per_s"] for r in own if r.get("pgd_images_per_s"))
    generators = len(own)
    return {
        "model": model_ref,
        "chain": chain_name,
        "estimators": [g for g, _ in estimators(chain, args.eot)],
        "generators": generators,
        "train_images": len(train[1]),
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "train_s": round(train_s, 1),
        "pgd_s": round(pgd_s, 1),
        "rest_s": round(wall - train_s - pgd_s, 1),
        "train_s_per_image_epoch": round(train_s / (generators * len(train[1]) * args.epochs), 5),
        "rows": [
            {
                k: r.get(k)
                for k in ("eps", "gradient", "success_rate", "robust_accuracy", "pgd_robust_accuracy")
            }
            for r in rows
        ],
    }


def markdown(paths: list[Path]) -> str:
    """The measurements of several runs' JSON files as one Markdown table (for reports/README.md)."""
    lines = [
        "| model | chain | epochs x train images | generators | CPU s | training s | PGD beside s | rest s "
        "| ms per image-epoch | AdvGAN robust at max eps |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for path in paths:
        doc = json.loads(path.read_text())
        for r in doc["results"]:
            top = max(row["eps"] for row in r["rows"])
            at = [row for row in r["rows"] if row["eps"] == top]
            shown = next((row for row in at if str(row["gradient"]).startswith("worst of")), at[0])
            lines.append(
                f"| {r['model']} | {r['chain']} | {doc['config']['epochs']} x {r['train_images']} | "
                f"{r['generators']} | {r['cpu_s']:.0f} | {r['train_s']:.0f} | {r['pgd_s']:.0f} | "
                f"{r['rest_s']:.0f} | {1000 * r['train_s_per_image_epoch']:.1f} | "
                f"{100 * shown['robust_accuracy']:.0f}% (eps {top:g}) |"
            )
    return "\n".join(lines)


def main() -> None:
    """Measure every (model, chain) and write the numbers as JSON."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["builtin:mnist", "builtin:mnist-adv"])
    p.add_argument("--chains", nargs="+", default=["none", "fencebox-default", "guo2018-jpeg"])
    p.add_argument("-n", type=int, default=100)
    p.add_argument("--eps", type=float, nargs="+", default=[0.1, 0.2, 0.3])
    p.add_argument("--eot", type=int, default=10)
    p.add_argument("--steps", type=int, default=20, help="the run's --steps: PGD beside AdvGAN")
    p.add_argument("--epochs", type=int, default=1, help="--advgan-epochs")
    p.add_argument("--train-limit", type=int, default=500, help="--train-limit (0: all 4000)")
    p.add_argument("--select-draws", type=int, default=5)
    p.add_argument("--score-draws", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("bench-advgan.json"))
    p.add_argument("--table", type=Path, nargs="+", help="print these runs' JSON as one Markdown table")
    args = p.parse_args()
    if args.table:
        print(markdown(args.table))
        return
    torch.set_num_threads(1)
    results = []
    for model_ref in args.models:
        for chain_name in args.chains:
            r = measure(model_ref, chain_name, args)
            results.append(r)
            print(
                f"{model_ref:18s} {chain_name:17s} {r['generators']} generators: wall {r['wall_s']:6.1f} s "
                f"(cpu {r['cpu_s']:6.1f}) = train {r['train_s']:6.1f} + PGD {r['pgd_s']:6.1f} + rest "
                f"{r['rest_s']:5.1f}; {1000 * r['train_s_per_image_epoch']:.2f} ms per train image-epoch",
                flush=True,
            )
            args.out.write_text(
                json.dumps({"config": vars(args) | {"out": str(args.out)}, "machine": platform.machine(),
                            "results": results}, indent=1) + "\n"
            )  # fmt: skip


if __name__ == "__main__":
    main()
