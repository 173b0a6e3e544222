"""Benchmark: FenceBox's default chain against its raw kernels and IBM ART's preprocessors.

Prints, measured side by side in one run on 224x224x3 crops of the scikit-image photos:
- µs/image of ``fencebox-default`` (one thread);
- µs/image of the same four kernels called directly in a loop (the floor; ratio target <= 1.1x);
- µs/image of IBM ART 1.20's JpegCompression -> FeatureSqueezing -> SpatialSmoothing applied one after
  another (ART cannot chain them itself; it has no resize-and-pad preprocessor, so the comparison is also
  printed for FenceBox's first three stages alone; ratio target >= 30x);
- throughput with 2 workers vs 1 (target >= 1.6x);
- a table of every registered transform's µs/image.

Run: ``.venv/bin/python benchmarks/bench_chain.py`` (ART comes with the ``bench`` extra: ``make bench``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch

import fencebox
from fencebox.registry import all_transforms

cv2.setNumThreads(1)
torch.set_num_threads(1)


def photos(n: int) -> np.ndarray:
    """n 224x224x3 crops tiled from the scikit-image photos (real content, not noise)."""
    from skimage import data

    crops = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"):
        img = getattr(data, name)()
        h, w = img.shape[:2]
        for y in range(0, h - 223, 112):
            for x in range(0, w - 223, 112):
                crops.append(img[y : y + 224, x : x + 224, :3])
    out = np.stack([crops[i % len(crops)] for i in range(n)]).astype(np.uint8)
    return np.ascontiguousarray(out)


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """Best wall time of ``repeats`` runs (the least disturbed by other load on a shared machine)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def raw_kernels(images: np.ndarray, seed: int = 0) -> np.ndarray:
    """The four default-chain kernels called directly: JPEG 75 4:2:0, 5-bit LUT, 3x3 median, resize+pad."""
    rng = np.random.default_rng(seed)
    levels = 31
    lut = np.clip(np.round(np.round(np.arange(256) / 255 * levels) / levels * 255), 0, 255).astype(np.uint8)
    params = [int(cv2.IMWRITE_JPEG_QUALITY), 75]
    if hasattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR"):
        params += [int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR), int(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420)]
    out = np.empty_like(images)
    for i, img in enumerate(images):
        _, buf = cv2.imencode(".jpg", img[..., ::-1], params)
        x = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
        x = lut[x]
        x = cv2.medianBlur(cv2.copyMakeBorder(x, 1, 1, 1, 1, cv2.BORDER_REFLECT), 3)[1:-1, 1:-1]
        side = int(rng.integers(int(0.9 * 224), 225))
        small = cv2.resize(x, (side, side), interpolation=cv2.INTER_LINEAR)
        oy, ox = rng.integers(0, 224 - side + 1, size=2)
        canvas = np.zeros_like(img)
        canvas[oy : oy + side, ox : ox + side] = small
        out[i] = canvas
    return out


def art_chain(images: np.ndarray) -> np.ndarray | None:
    """ART 1.20's three matching preprocessors, one after another, on [0, 1] floats NHWC."""
    try:
        from art.defences.preprocessor import FeatureSqueezing, JpegCompression, SpatialSmoothing
    except ImportError:
        return None
    x = images.astype(np.float32) / 255.0
    jpeg = JpegCompression(clip_values=(0.0, 1.0), quality=75, channels_first=False, apply_predict=True)
    squeeze = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=5, apply_predict=True)
    smooth = SpatialSmoothing(window_size=3, channels_first=False, apply_predict=True)
    x, _ = jpeg(x)
    x, _ = squeeze(x)
    x, _ = smooth(x)
    return x


def main() -> None:
    """Run every measurement and print the table."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=64, help="images per batch")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    images = photos(args.n)
    n = len(images)
    default = fencebox.load_chain("fencebox-default")
    first3 = fencebox.load_chain("jpeg(quality=75) | bit_depth(bits=5) | median(size=3)")

    us = {}
    us["fencebox-default (1 worker)"] = best_of(lambda: default(images, rng=0), args.repeats) / n * 1e6
    us["raw kernels (floor)"] = best_of(lambda: raw_kernels(images), args.repeats) / n * 1e6
    us["fencebox jpeg|bit_depth|median"] = best_of(lambda: first3(images, rng=0), args.repeats) / n * 1e6
    has_art = art_chain(images[:2]) is not None
    if has_art:
        us["ART JpegCompression->FeatureSqueezing->SpatialSmoothing"] = (
            best_of(lambda: art_chain(images), max(2, args.repeats // 2)) / n * 1e6
        )
    us["fencebox-default (2 workers)"] = (
        best_of(lambda: default(images, rng=0, workers=2), args.repeats) / n * 1e6
    )

    print(f"\n224x224x3 scikit-image crops, batch {n}, best of {args.repeats}; µs/image")
    for k, v in us.items():
        print(f"  {k:<58} {v:10.1f}")
    floor = us["fencebox-default (1 worker)"] / us["raw kernels (floor)"]
    print(f"\n  fencebox-default / raw kernels           = {floor:6.2f}x   (target <= 1.10x)")
    if has_art:
        art = us["ART JpegCompression->FeatureSqueezing->SpatialSmoothing"]
        print(
            f"  ART / fencebox (same three defences)     = {art / us['fencebox jpeg|bit_depth|median']:6.1f}x   "
            "(target >= 30x)"
        )
        print(f"  ART(3) / fencebox-default (all four)     = {art / us['fencebox-default (1 worker)']:6.1f}x")
    else:
        print("  ART not installed: `make bench` installs the bench extra")
    speedup = us["fencebox-default (1 worker)"] / us["fencebox-default (2 workers)"]
    print(
        f"  throughput 2 workers / 1 worker          = {speedup:6.2f}x   (target >= 1.6x; {os.cpu_count()} cores)"
    )

    print("\nEvery transform with default parameters, 1 worker, µs/image at 224x224x3:")
    small = images[: min(n, 16)]
    for name, cls in all_transforms().items():
        if name in ("chain", "choice", "random_order", "random_apply"):
            continue
        t = cls()
        sec = best_of(lambda t=t: t(small, rng=0), max(2, args.repeats // 2)) / len(small)
        flag = "  > 5 ms: see its docstring" if sec > 5e-3 else ""
        print(f"  {name:<22} {sec * 1e6:10.1f}{flag}")


if __name__ == "__main__":
    main()
