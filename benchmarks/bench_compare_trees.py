"""Benchmark two source trees side by side in one run: is a change slower than the code it replaces?

Times chains on a 64 x 224 x 224 x 3 batch of photo crops, with 1 and 2 workers, each measurement in its
own subprocess with ``PYTHONPATH`` set to one tree, alternating trees round by round (best of rounds).
It reports CPU time per image (``time.process_time``: on a shared, loaded machine wall time mostly
measures the neighbours) and wall time.

Run: ``python benchmarks/bench_compare_trees.py OLD_TREE NEW_TREE`` (e.g. a ``git archive main``
unpacked in /tmp, and this checkout).  Old-tree specs get ``scale=[lo, hi]`` rewritten to the old
``min_scale=lo, max_scale=hi`` spelling, so both trees run the same chain.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

CHILD = r"""
import os, sys, time, json
os.environ.setdefault("OMP_NUM_THREADS", "1")
import cv2, numpy as np, torch
cv2.setNumThreads(1); torch.set_num_threads(1)
import fencebox
from skimage import data
img = np.ascontiguousarray(data.astronaut()[:224, :224])
rng = np.random.default_rng(0)
batch = np.stack([np.roll(img, int(rng.integers(0, 200)), axis=1) for _ in range(64)])
spec, workers, reps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
chain = fencebox.load_chain(spec)
chain(batch[:4], rng=0, workers=workers)
cpu = wall = 1e9
for _ in range(reps):
    c0, w0 = time.process_time(), time.perf_counter()
    chain(batch, rng=1, workers=workers)
    cpu, wall = min(cpu, time.process_time() - c0), min(wall, time.perf_counter() - w0)
print(json.dumps({"cpu": cpu / 64 * 1e6, "wall": wall / 64 * 1e6}))
"""

CASES = [
    ("fencebox-default", 1),
    ("fencebox-default", 2),
    ("median(size=5) | gaussian_blur(sigma=1.5)", 1),
    ("random_crop | resize_pad(scale=[0.9, 1.0])", 1),
]


def old_spelling(spec: str) -> str:
    """``scale=[lo, hi]`` written as the older ``min_scale=lo, max_scale=hi``."""
    return re.sub(r"scale=\[([^,\]]+), ([^\]]+)\]", r"min_scale=\1, max_scale=\2", spec)


def measure(tree: str, spec: str, workers: int, reps: int) -> dict[str, float]:
    """CPU and wall microseconds per image of ``spec`` run from ``tree`` (best of ``reps``)."""
    env = {**os.environ, "PYTHONPATH": tree}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, spec, str(workers), str(reps)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    """Measure every case on both trees, interleaved, and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("old")
    ap.add_argument("new")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    best: dict[tuple[str, int, str], dict[str, float]] = {}
    for r in range(args.rounds):
        trees = [("old", args.old), ("new", args.new)]
        for spec, workers in CASES:
            for label, tree in trees if r % 2 == 0 else trees[::-1]:
                got = measure(tree, old_spelling(spec) if label == "old" else spec, workers, args.reps)
                key = (spec, workers, label)
                prev = best.get(key, {"cpu": 1e18, "wall": 1e18})
                best[key] = {k: min(prev[k], got[k]) for k in prev}
    print(
        f"{'chain':45s} {'workers':>7s} {'old cpu':>9s} {'new cpu':>9s} {'ratio':>6s} {'old wall':>9s} {'new wall':>9s}"
    )
    for spec, workers in CASES:
        o, n = best[(spec, workers, "old")], best[(spec, workers, "new")]
        print(
            f"{spec:45s} {workers:7d} {o['cpu']:9.0f} {n['cpu']:9.0f} {n['cpu'] / o['cpu']:6.3f} "
            f"{o['wall']:9.0f} {n['wall']:9.0f}"
        )
    print("(microseconds per image; best of rounds; CPU time is the figure to compare on a loaded machine)")


if __name__ == "__main__":
    main()
