"""Benchmark: FenceBox's default chain against an honest floor of raw OpenCV calls, and IBM ART.

Prints, measured side by side in one run on 224x224x3 crops of the scikit-image photos:
- the floor: the fastest correct raw calls for ``fencebox-default`` (``cv2.imencode``/``cv2.imdecode``,
  ``cv2.LUT``, ``cv2.medianBlur`` on a reflect-bordered image, ``cv2.resize`` + ``cv2.copyMakeBorder``),
  on the same images with the same random draws (the chain's own params), checked to give the same
  pixels; each stage's ratio to its own raw call, and the whole chain's (target <= 1.1x);
- ``resize_pad``, ``random_crop``, ``flip`` and ``affine`` each against their OpenCV equivalent
  (``resize`` + ``copyMakeBorder``, slicing + ``resize``, ``flip``, ``warpAffine``; target <= 1.3x);
- µs/image of IBM ART's JpegCompression -> FeatureSqueezing -> SpatialSmoothing applied one after
  another (ART cannot chain them itself and has no resize-and-pad), when the ``bench`` extra is installed;
- ``fencebox-default`` throughput with 2 workers vs 1 (target >= 1.6x on two idle cores), next to two
  independent processes vs one: the machine's own ceiling for two cores;
- a table of every registered transform's µs/image.

Run: ``.venv/bin/python benchmarks/bench_chain.py`` (ART comes with the ``bench`` extra: ``make bench``).
Single-threaded comparisons are CPU times (best of ``--repeats``, the two sides run alternately), so
that their ratios hold on a shared machine; the workers comparison is wall time (it is about cores).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import multiprocessing as mp
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import cv2
import numpy as np
import torch

import fencebox
from fencebox.chain import Chain
from fencebox.registry import all_transforms, get_transform
from fencebox.transforms.base import Params, Transform
from fencebox.transforms.geometric import Affine, RandomCrop
from fencebox.transforms.resize_pad import ResizePad

cv2.setNumThreads(1)
torch.set_num_threads(1)

Raw = Callable[[np.ndarray], np.ndarray]


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


def best_of(fn: Callable[[], object], repeats: int, clock: Callable[[], float] = time.perf_counter) -> float:
    """Best time of ``repeats`` runs by ``clock`` (the least disturbed by other load on a shared machine)."""
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return min(times)


def alternate(
    first: Callable[[], object], second: Callable[[], object], repeats: int, clock: Callable[[], float]
) -> tuple[np.ndarray, np.ndarray]:
    """Times by ``clock`` of ``repeats`` runs of each of two calls, run alternately.

    Alternating puts both sides under the same background load: a spike from elsewhere on the
    machine hits one pair, not one side of a ratio.
    """
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):
        for fn, times in ((first, a), (second, b)):
            t0 = clock()
            fn()
            times.append(clock() - t0)
    return np.asarray(a), np.asarray(b)


def best_pair(ours: Callable[[], object], theirs: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Best CPU time of each of two single-threaded calls, run alternately.

    CPU time (``time.process_time``; OpenCV and torch are held to one thread) leaves out the time
    other processes hold the core, so a ratio means something on a shared machine too.
    """
    a, b = alternate(ours, theirs, repeats, time.process_time)
    return float(a.min()), float(b.min())


def paired_wall(
    one: Callable[[], object], other: Callable[[], object], repeats: int
) -> tuple[float, float, float]:
    """Best wall time of each of two calls run alternately, and the median ratio of the pairs.

    For comparisons about cores (CPU time would hide what parallelism buys): the median of the
    per-pair ratios is steadier than a ratio of two best-ofs taken at different moments.
    """
    a, b = alternate(one, other, repeats, time.perf_counter)
    return float(a.min()), float(b.min()), float(np.median(a / b))


def _chain_loop(n: int, loops: int, barrier: Any, results: Any) -> None:
    """One process of :func:`process_ceiling`: ``loops`` runs of fencebox-default on ``n`` photos."""
    cv2.setNumThreads(1)
    images = photos(n)
    chain = fencebox.load_chain("fencebox-default")
    chain(images, rng=0)  # warm
    barrier.wait()
    for _ in range(loops):
        chain(images, rng=0)
    results.put(time.perf_counter())


def process_ceiling(n: int, loops: int, rounds: int) -> float:
    """Throughput of two independent processes over one, running fencebox-default (median of rounds).

    What two cores of this machine give with nothing shared between the workers (no GIL, no common
    memory): the ceiling that two threads in one process can approach but not pass.
    """
    ctx = mp.get_context("spawn")
    ratios = []
    for _ in range(rounds):
        walls = {}
        for k in (1, 2):
            barrier, results = ctx.Barrier(k + 1), ctx.Queue()
            procs = [ctx.Process(target=_chain_loop, args=(n, loops, barrier, results)) for _ in range(k)]
            for proc in procs:
                proc.start()
            barrier.wait()
            t0 = time.perf_counter()
            walls[k] = max(results.get() for _ in range(k)) - t0
            for proc in procs:
                proc.join()
        ratios.append(2 * walls[1] / walls[2])
    return float(np.median(ratios))


# ----- the floor: raw OpenCV calls, one image at a time -------------------------------------------------


def raw_jpeg(quality: int) -> Raw:
    """libjpeg round trip of RGB images at ``quality``, 4:2:0 (what ``jpeg`` does, without FenceBox)."""
    flags = [cv2.IMWRITE_JPEG_QUALITY, quality, cv2.IMWRITE_JPEG_SAMPLING_FACTOR]
    flags.append(cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420)

    def run(images: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        for i, img in enumerate(images):
            _, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), flags)
            out[i] = cv2.imdecode(buf, cv2.IMREAD_COLOR_RGB)
        return out

    return run


def raw_lut(table: np.ndarray) -> Raw:
    """``cv2.LUT`` on the whole batch viewed as one 2-D image."""

    def run(images: np.ndarray) -> np.ndarray:
        n, h, w, c = images.shape
        return cv2.LUT(images.reshape(n * h, w * c), table).reshape(images.shape)

    return run


def raw_median3(images: np.ndarray) -> np.ndarray:
    """3x3 ``cv2.medianBlur`` of each image padded by 1 with ``BORDER_REFLECT`` (scipy's "reflect")."""
    out = np.empty_like(images)
    h, w = images.shape[1:3]
    for i, img in enumerate(images):
        padded = cv2.copyMakeBorder(img, 1, 1, 1, 1, cv2.BORDER_REFLECT)
        out[i] = cv2.medianBlur(padded, 3)[1 : 1 + h, 1 : 1 + w]
    return out


def raw_resize_pad(t: ResizePad, params: Params) -> Raw:
    """``cv2.resize`` + ``cv2.copyMakeBorder`` (zeros) with the transform's own boxes."""

    def run(images: np.ndarray) -> np.ndarray:
        _, oh, ow, _ = t.output_shape(images.shape)
        out = np.empty((images.shape[0], oh, ow, images.shape[3]), np.uint8)
        for i, img in enumerate(images):
            top, left, sh, sw = t.box(params, i, img.shape[:2], (oh, ow))
            small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_LINEAR)
            out[i] = cv2.copyMakeBorder(
                small, top, oh - top - sh, left, ow - left - sw, cv2.BORDER_CONSTANT, value=0
            )
        return out

    return run


def raw_crop(t: RandomCrop, params: Params) -> Raw:
    """Slicing + ``cv2.resize`` back to the input size, with the transform's own crop boxes."""

    def run(images: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        h, w = images.shape[1:3]
        for i, img in enumerate(images):
            top, left, ch, cw = t.box(params, i, (h, w))
            out[i] = cv2.resize(img[top : top + ch, left : left + cw], (w, h), interpolation=cv2.INTER_LINEAR)
        return out

    return run


def raw_flip(params: Params) -> Raw:
    """``cv2.flip`` of the drawn images, a copy of the others."""
    mask = np.asarray(params["flip"], dtype=bool)

    def run(images: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        for i, img in enumerate(images):
            if mask[i]:
                cv2.flip(img, 1, dst=out[i])
            else:
                out[i] = img
        return out

    return run


def raw_affine(t: Affine, params: Params, shape: tuple[int, ...]) -> Raw:
    """``cv2.warpAffine`` (inverse map, reflected border) with the transform's matrices, made beforehand."""
    h, w = shape[1:3]
    matrices = [t.matrix(params, i, (h, w)) for i in range(shape[0])]
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP

    def run(images: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        for i, img in enumerate(images):
            out[i] = cv2.warpAffine(img, matrices[i], (w, h), flags=flags, borderMode=cv2.BORDER_REFLECT)
        return out

    return run


def raw_floor(stages: list[Raw]) -> Raw:
    """The raw calls one after another on the whole batch."""

    def run(images: np.ndarray) -> np.ndarray:
        for f in stages:
            images = f(images)
        return images

    return run


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


def _levels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int64) - b.astype(np.int64)).max())


def main() -> None:
    """Run every measurement and print the tables."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=64, help="images per batch")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-table", action="store_true", help="skip the every-transform table")
    args = parser.parse_args()
    images = photos(args.n)
    n, reps = len(images), args.repeats
    default = fencebox.load_chain("fencebox-default")
    assert isinstance(default, Chain)
    params = default.sample(np.random.default_rng(0), images.shape)
    stages: list[Transform] = list(default)
    steps: list[Params] = params["steps"]
    jpeg, bits, _median, rpad = stages
    assert isinstance(rpad, ResizePad)
    levels = 2 ** int(bits.config["bits"]) - 1  # Xu et al.'s squeezing: round to `levels` steps
    table = np.clip(np.round(np.round(np.arange(256) / 255 * levels) / levels * 255), 0, 255).astype(np.uint8)
    raws: list[Raw] = [
        raw_jpeg(int(jpeg.config["quality"])),
        raw_lut(table),
        raw_median3,
        raw_resize_pad(rpad, steps[3]),
    ]
    print(
        f"\n224x224x3 scikit-image crops, batch {n}, best of {reps}; µs/image of CPU time, run alternately "
        f"(cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f})"
    )

    # Per stage, on the stage's own input (the previous stage's output), same params.
    print(f"\n  {'fencebox-default stage':<26} {'fencebox':>10} {'raw':>10} {'ratio':>7}  raw call")
    names = ["cv2.imencode/imdecode", "cv2.LUT", "cv2.medianBlur (reflect)", "cv2.resize+copyMakeBorder"]
    x = images
    for t, p, raw, label in zip(stages, steps, raws, names, strict=True):
        ours_out, raw_out = t.apply(x, p), raw(x)
        if _levels(ours_out, raw_out):
            raise SystemExit(f"{t.name}: the raw call gives different pixels, the floor is not a floor")
        ours, floor = (v / n * 1e6 for v in best_pair(partial(t.apply, x, p), partial(raw, x), reps))
        print(f"  {t.name:<26} {ours:10.1f} {floor:10.1f} {ours / floor:6.2f}x  {label}")
        x = ours_out

    # The whole chain against the raw calls in sequence, same images, same draws.
    floor_fn = raw_floor(raws)
    if _levels(default.apply(images, params), floor_fn(images)):
        raise SystemExit("fencebox-default and the raw floor disagree")
    us: dict[str, float] = {}
    ours, floor = best_pair(lambda: default.apply(images, params), lambda: floor_fn(images), reps)
    us["fencebox-default (1 worker)"] = ours / n * 1e6
    us["raw floor (same draws, identical pixels)"] = floor / n * 1e6
    print()
    for k, v in us.items():
        print(f"  {k:<48} {v:10.1f} µs/image")
    ratio = us["fencebox-default (1 worker)"] / us["raw floor (same draws, identical pixels)"]
    print(f"  fencebox-default / raw floor                   = {ratio:6.2f}x   (target <= 1.10x)")

    # Geometric transforms against their OpenCV equivalents, with their own draws.
    print(f"\n  {'geometric (defaults)':<26} {'fencebox':>10} {'opencv':>10} {'ratio':>7}  (target <= 1.30x)")
    rng = np.random.default_rng(1)
    crop, flip, affine = get_transform("random_crop")(), get_transform("flip")(), get_transform("affine")()
    assert isinstance(crop, RandomCrop) and isinstance(affine, Affine)
    cases: list[tuple[Transform, Params, Callable[[Params], Raw], str]] = [
        (rpad, steps[3], lambda p: raw_resize_pad(rpad, p), "resize + copyMakeBorder"),
        (crop, crop.sample(rng, images.shape), lambda p: raw_crop(crop, p), "slicing + resize"),
        (flip, flip.sample(rng, images.shape), raw_flip, "flip"),
        (
            affine,
            affine.sample(rng, images.shape),
            lambda p: raw_affine(affine, p, images.shape),
            "warpAffine",
        ),
    ]
    for t, p, make_raw, label in cases:
        raw = make_raw(p)
        if _levels(t.apply(images, p), raw(images)):
            raise SystemExit(f"{t.name}: the OpenCV equivalent gives different pixels")
        ours, cv = (v / n * 1e6 for v in best_pair(partial(t.apply, images, p), partial(raw, images), reps))
        print(f"  {t.name:<26} {ours:10.1f} {cv:10.1f} {ours / cv:6.2f}x  {label}")

    # ART, when installed.
    first3 = fencebox.load_chain("jpeg(quality=75) | bit_depth(bits=5) | median(size=3)")
    print()
    if art_chain(images[:2]) is not None:
        art = best_of(lambda: art_chain(images), max(2, reps // 2), time.process_time) / n * 1e6
        ours3 = best_of(lambda: first3(images, rng=0), reps, time.process_time) / n * 1e6
        print(f"  ART JpegCompression->FeatureSqueezing->SpatialSmoothing {art:10.1f} µs/image")
        print(f"  fencebox jpeg|bit_depth|median                         {ours3:10.1f} µs/image")
        print(f"  ART / fencebox (same three defences)     = {art / ours3:6.1f}x")
        print(f"  ART(3) / fencebox-default (all four)     = {art / us['fencebox-default (1 worker)']:6.1f}x")
    else:
        print("  ART not installed (the `bench` extra: `make bench`): ART comparison skipped")

    # Two workers against one on the whole chain (sample + apply, as a caller runs it): wall time.
    one, two, median_ratio = paired_wall(
        lambda: default(images, rng=0), lambda: default(images, rng=0, workers=2), max(15, reps)
    )
    print(
        f"  fencebox-default throughput 2 workers / 1  = {median_ratio:6.2f}x   (median of {max(15, reps)} "
        f"alternating pairs; target >= 1.6x on two idle cores; best {one / n * 1e6:.1f} vs "
        f"{two / n * 1e6:.1f} µs/image, ratio of bests {one / two:.2f}x)"
    )

    ceiling = process_ceiling(n, 10, 5)
    print(
        f"  2 independent processes / 1 (this machine's ceiling)   = {ceiling:6.2f}x   (median of 5 rounds; "
        f"threads reach {median_ratio / ceiling:.0%} of it)"
    )

    if args.no_table:
        return
    print("\nEvery transform with default parameters, 1 worker, µs/image (CPU time) at 224x224x3:")
    small = images[: min(n, 16)]
    for name, cls in all_transforms().items():
        if name in ("chain", "choice", "random_order", "random_apply"):
            continue
        t = cls()
        sec = best_of(partial(t, small, rng=0), max(2, reps // 2), time.process_time) / len(small)
        flag = "  > 5 ms: see its docstring" if sec > 5e-3 else ""
        print(f"  {name:<22} {sec * 1e6:10.1f}{flag}")


if __name__ == "__main__":
    main()
