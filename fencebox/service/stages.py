"""Run a chain one top-level stage at a time, keeping every intermediate image, its time and its draw.

This is what the ``/ui`` playground shows (``POST /v1/purify?stages=true``).  The stages draw from one
generator in the same order as :meth:`Chain.run`, so with the same seed the last stage's output is the
chain's output, bit for bit: the playground shows the chain that really runs, not a re-creation of it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fencebox.chain import Chain, Choice, RandomApply, RandomOrder
from fencebox.presets import list_presets
from fencebox.spec import load_chain, parse_compact
from fencebox.transforms.base import Params, Transform, check_batch


@dataclass
class Stage:
    """One stage's result: the transform, its output (1, H, W, C) uint8, seconds taken, what it drew."""

    transform: Transform
    image: np.ndarray
    seconds: float
    drawn: dict[str, Any] = field(default_factory=dict)


def parse_spec(text: str) -> Transform:
    """Build a chain from a preset name or a compact spec, never from a file (specs come from clients)."""
    s = text.strip()
    return load_chain(s) if s in list_presets() else load_chain(parse_compact(s))


def stages_of(chain: Transform) -> list[Transform]:
    """The top-level stages of ``chain`` (a non-chain transform is a single stage)."""
    return list(chain) if isinstance(chain, Chain) else [chain]


def drawn(t: Transform, params: Params) -> dict[str, Any]:
    """What a random combinator drew for the first image, in words a person can read.

    ``choice`` names the picked transforms, ``random_apply`` says whether it ran, ``random_order``
    gives the order; other transforms draw only numbers, which are not shown.
    """
    if isinstance(t, Choice):
        picks = [int(i) for i in np.asarray(params["picks"])[0]]
        return {"picked": [str(t.children[i]) for i in picks]}
    if isinstance(t, RandomApply):
        return {"applied": bool(np.asarray(params["mask"])[0])}
    if isinstance(t, RandomOrder):
        order = [int(i) for i in np.asarray(params["orders"])[0]]
        return {"order": [str(t.children[i]) for i in order]}
    return {}


def run_stages(chain: Transform, batch: np.ndarray, rng: np.random.Generator | int | None) -> list[Stage]:
    """Run ``chain``'s stages in order on a (1, H, W, C) uint8 batch; ``rng`` None draws fresh randomness."""
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out: list[Stage] = []
    images = batch
    for t in stages_of(chain):
        t0 = time.perf_counter()
        check_batch(images, t.min_size, t.name)
        params = t.sample(gen, images.shape)
        images = t.apply(images, params)
        out.append(Stage(t, images, time.perf_counter() - t0, drawn(t, params)))
    return out


def _colour_map() -> np.ndarray:
    """A 256-entry black -> red -> yellow -> white map (perceptually ordered, readable in gray print)."""
    x = np.linspace(0.0, 1.0, 256)
    r = np.clip(x * 3.0, 0, 1)
    g = np.clip(x * 3.0 - 1.0, 0, 1)
    b = np.clip(x * 3.0 - 2.0, 0, 1)
    return np.round(np.stack([r, g, b], axis=1) * 255).astype(np.uint8)


_LUT = _colour_map()


def _as_float_rgb(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """``image`` (H, W, C) as float (height, width, 3), resized by nearest neighbour when sizes differ."""
    h, w, _ = image.shape
    if (h, w) != (height, width):
        rows = np.minimum((np.arange(height) * h) // height, h - 1)
        cols = np.minimum((np.arange(width) * w) // width, w - 1)
        image = image[rows][:, cols]
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    return rgb.astype(np.float32)


def heatmap(original: np.ndarray, purified: np.ndarray) -> tuple[np.ndarray, int]:
    """The per-pixel difference of two (H, W, C) uint8 images as an RGB heat-map, and its largest value.

    The difference is the largest absolute change over the channels (0..255), on the original's grid
    (the purified image is resized to it by nearest neighbour when a stage changed the size).  The
    colours are scaled to the largest difference, so faint changes stay visible; the value says how large.
    """
    h, w, _ = original.shape
    diff = np.abs(_as_float_rgb(original, h, w) - _as_float_rgb(purified, h, w)).max(axis=2)
    peak = int(diff.max())
    scaled = np.zeros((h, w), np.uint8) if peak == 0 else np.round(diff * (255.0 / peak)).astype(np.uint8)
    return np.ascontiguousarray(_LUT[scaled]), peak
