"""Throughput of builtin:mnist on the serving path vs the raw torch module, and training epoch time.

Serving path: ``Classifier.predict(uint8 NHWC) -> int64 labels`` (input checks, conversion, forward, argmax).
Raw: the same module called directly on a ready float NCHW tensor (``module(x).argmax(1)``, inference mode),
and a hand-written uint8 -> float -> module -> argmax loop (what a user would write without FenceBox).
Each figure is the best of several timed rounds, so noise from other processes on the machine inflates
neither side; rounds of the two paths are interleaved.

Usage: python benchmarks/bench_models.py [--batches 1 32 256] [--threads 1 2] [--rounds 7] [--adv] [--json F]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fencebox.models import load_dataset, load_model
from fencebox.models.training import RECIPES, train


def _best_rate(
    fns: dict[str, Callable[[], object]], n_images: int, rounds: int, min_s: float
) -> dict[str, float]:
    """Images/s of each function: best round over ``rounds``, each round repeating calls for ``min_s``."""
    for fn in fns.values():
        fn()  # warm-up
    best = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for name, fn in fns.items():
            calls, t0 = 0, time.perf_counter()
            while True:
                fn()
                calls += 1
                elapsed = time.perf_counter() - t0
                if elapsed >= min_s:
                    break
            best[name] = max(best[name], calls * n_images / elapsed)
    return best


def bench_serving(batches: list[int], threads: list[int], rounds: int, min_s: float) -> list[dict[str, Any]]:
    """Serving path vs raw module, per thread count and batch size."""
    model = load_model("builtin:mnist", device="cpu")
    module = model.torch_module()
    if module is None:
        raise SystemExit("builtin:mnist has no torch module")
    x_all, _ = load_dataset("builtin:mnist-test")
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        for b in batches:
            images = np.ascontiguousarray(np.resize(x_all, (b, *x_all.shape[1:])))
            ready = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0)

            def raw_module(ready: torch.Tensor = ready) -> object:
                with torch.inference_mode():
                    return module(ready).argmax(1)

            def raw_pipeline(images: np.ndarray = images) -> object:
                with torch.inference_mode():
                    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
                    return module(x).argmax(1).numpy()

            def serving(images: np.ndarray = images) -> object:
                return model.predict(images)

            rate = _best_rate(
                {"serving": serving, "raw_module": raw_module, "raw_pipeline": raw_pipeline}, b, rounds, min_s
            )
            rows.append(
                {
                    "threads": t,
                    "batch": b,
                    **{k: round(v, 1) for k, v in rate.items()},
                    "overhead_vs_module_pct": round(100 * (rate["raw_module"] / rate["serving"] - 1), 1),
                    "overhead_vs_pipeline_pct": round(100 * (rate["raw_pipeline"] / rate["serving"] - 1), 1),
                }
            )
    return rows


def bench_training(threads: list[int], adv: bool) -> list[dict[str, Any]]:
    """Seconds for one epoch of the builtin:mnist recipe (4,000 digits), and of PGD-7 training if ``adv``."""
    rows = []
    recipes = ["mnist", "mnist-adv"] if adv else ["mnist"]
    for name in recipes:
        for t in threads:
            cfg = dataclasses.replace(RECIPES[name], epochs=1, test_data=None, threads=t, eps_warmup=0)
            result = train(cfg)
            rows.append({"recipe": name, "threads": t, "epoch_s": round(result.history[0].seconds, 2)})
    return rows


def main() -> None:
    """Run both benchmarks and print tables (and optionally JSON)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 32, 256])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--min-seconds", type=float, default=0.3)
    p.add_argument("--adv", action="store_true", help="also time one PGD-7 adversarial training epoch")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    serving = bench_serving(args.batches, args.threads, args.rounds, args.min_seconds)
    print(f"builtin:mnist, images/s (best of {args.rounds} rounds), torch {torch.__version__}")
    print(
        f"{'threads':>7} {'batch':>5} {'serving':>10} {'raw module':>11} {'raw pipeline':>13} "
        f"{'ovh vs module':>14} {'ovh vs pipeline':>16}"
    )
    for r in serving:
        print(
            f"{r['threads']:>7} {r['batch']:>5} {r['serving']:>10.0f} {r['raw_module']:>11.0f} "
            f"{r['raw_pipeline']:>13.0f} {r['overhead_vs_module_pct']:>13.1f}% {r['overhead_vs_pipeline_pct']:>15.1f}%"
        )
    training = bench_training(args.threads, args.adv)
    print("training epoch (4,000 digits):")
    for r in training:
        print(f"  {r['recipe']:<10} threads {r['threads']}: {r['epoch_s']:.2f} s")
    if args.json:
        args.json.write_text(json.dumps({"serving": serving, "training": training}, indent=2) + "\n")


if __name__ == "__main__":
    main()
