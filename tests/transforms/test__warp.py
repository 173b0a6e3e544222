"""The geometric fast paths (cv2.resize, cv2.warpAffine, cv2.flip, slicing) and their surrogates.

What a user relies on: the differentiable surrogate samples the same positions as the fast ``apply``
(within 1 grey level: the uint8 rounding), for 1 and 3 channels and any size; an image's output does
not depend on its batch; and the outputs moved from those of the old generic remap path
(``data/geometric_before.npz``) only by the old path's 1/32-pixel snapping of sample positions.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from fencebox.registry import get_transform
from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float
from fencebox.transforms._warp import warp_affine_samples_float
from fencebox.transforms.base import slice_params
from fencebox.transforms.geometric import Affine
from tests.transforms.data.make_geometric_before import photo

SPECS: list[tuple[str, dict[str, Any]]] = [
    ("resize_pad", {}),
    ("resize_pad", {"min_scale": 0.3, "max_scale": 1.0}),
    ("resize_pad", {"min_scale": 0.5, "max_scale": 3.0, "out_size": 64}),
    ("random_crop", {}),
    ("random_crop", {"min_scale": 0.1, "max_scale": 0.6}),
    ("flip", {}),
    ("affine", {}),
    ("affine", {"border": "constant", "max_rotate": 180.0, "max_shift": 0.5}),
    ("affine", {"min_scale": 0.05, "max_scale": 0.2, "max_shift": 1.0}),  # several reflections away
    ("affine", {"min_scale": 4.0, "max_scale": 10.0, "border": "constant"}),
]
SIZES = [(2, 2), (3, 5), (16, 16), (17, 9), (20, 21)]  # tiny, odd, even, non-square


@cache
def _images(h: int, w: int, c: int, kind: str) -> np.ndarray:
    """Three images: photo crops (real edges) or uniform noise (the largest neighbour differences)."""
    if kind == "noise":
        return np.random.default_rng(h * 100 + w + c).integers(0, 256, (3, h, w, c), dtype=np.uint8)
    return np.stack([photo(h, w, c, k) for k in range(3)])


@pytest.mark.parametrize("kind", ["photo", "noise"])
@pytest.mark.parametrize(("name", "kwargs"), SPECS)
def test_surrogate_samples_the_same_positions_as_apply(name: str, kwargs: dict[str, Any], kind: str) -> None:
    t = get_transform(name)(**kwargs)
    for h, w in SIZES:
        if "out_size" in kwargs and 3 * max(h, w) > kwargs["out_size"]:
            continue
        for c in (1, 3):
            x = _images(h, w, c, kind)
            params = t.sample(np.random.default_rng(h + w + c), x.shape)
            out = t.apply(x, params)
            assert out.shape == t.output_shape(x.shape) and out.dtype == np.uint8
            with torch.no_grad():
                sur = t.surrogate(nhwc_uint8_to_nchw_float(x).double(), params)
            diff = np.abs(nchw_float_to_nhwc_uint8(sur).astype(np.int64) - out)
            assert diff.max() <= 1, (name, kwargs, kind, h, w, c, diff.max())


@pytest.mark.parametrize(("name", "kwargs"), SPECS)
def test_an_image_gets_the_same_output_alone_in_any_batch_and_with_workers(
    name: str, kwargs: dict[str, Any]
) -> None:
    t = get_transform(name)(**kwargs)
    x = _images(17, 9, 3, "photo")
    params = t.sample(np.random.default_rng(7), x.shape)
    whole = t.apply(x, params)
    for i in range(len(x)):
        np.testing.assert_array_equal(
            t.apply(x[i : i + 1], slice_params(params, slice(i, i + 1))), whole[i : i + 1]
        )
    np.testing.assert_array_equal(
        t.run(x, np.random.default_rng(3), workers=2), t.run(x, np.random.default_rng(3))
    )


def test_affine_matrix_is_warp_affines_inverse_map_and_grid_follows_it() -> None:
    t = Affine(max_rotate=30.0)
    params = t.sample(np.random.default_rng(0), (1, 12, 20, 3))
    m = t.matrix(params, 0, (12, 20))
    # The grid (what the surrogate samples) is the matrix applied to every output pixel.
    mx, my = Affine(max_rotate=30.0, border="constant").grid(params, 0, (12, 20), (12, 20))
    # (Exactly on OpenCV 5; OpenCV 4's warpAffine samples at positions rounded to 1/32 pixel.)
    tol = 1e-4 if warp_affine_samples_float() else 1 / 32
    assert mx[3, 5] == pytest.approx(m[0, 0] * 5 + m[0, 1] * 3 + m[0, 2], abs=tol)
    assert my[3, 5] == pytest.approx(m[1, 0] * 5 + m[1, 1] * 3 + m[1, 2], abs=tol)
    # The forward map (cv2's invertAffineTransform of it) sends the shifted centre to the centre.
    fwd = cv2.invertAffineTransform(m)
    cx, cy = 19 / 2 + params["shift"][0, 0] * 20, 11 / 2 + params["shift"][0, 1] * 12
    np.testing.assert_allclose(fwd @ np.array([9.5, 5.5, 1.0]), [cx, cy], atol=1e-9)


# ----- the old outputs ------------------------------------------------------------------------------------

BEFORE = np.load(Path(__file__).parent / "data" / "geometric_before.npz")
BEFORE_CASES: list[tuple[str, dict[str, Any]]] = json.loads(str(BEFORE["cases"]))


@pytest.mark.parametrize("index", range(len(BEFORE_CASES)))
def test_outputs_stay_close_to_the_remap_path_they_replace(index: int) -> None:
    # The old path sampled at positions snapped to 1/32 pixel; the fast kernels sample at the exact
    # positions (within 1 level of exact bilinear, see the surrogate test).  So a value may move by up to
    # |neighbour difference| / 64 per axis (2 x 255 / 64 < 8 levels) next to a sharp edge, and by at most
    # 1 level (rounding) where the image is locally flat.  (The fixture was written on OpenCV 5.  On
    # OpenCV 4, warpAffine rounds positions to 1/32 pixel its own way, up to 1/32 pixel per axis from the
    # old snap: up to 2 x 255 / 32 < 16 levels next to an edge.)
    name, kwargs = BEFORE_CASES[index]
    edge_bound = 8 if warp_affine_samples_float() or name != "affine" else 16
    t = get_transform(name)(**kwargs)
    keys = [k for k in BEFORE.files if k.startswith(f"out_{index}_")]
    assert keys
    moved, total = 0, 0
    for key in keys:
        x = BEFORE["in_" + key[4:]]
        old = BEFORE[key].astype(np.int64)
        diff = np.abs(t(x, rng=1000 + index).astype(np.int64) - old)
        # Where the old output is locally flat (all 3x3 neighbours within 8 levels: with the fixture's
        # zooms of at most ~3x, a source slope below ~25 levels per pixel), a move of 1/64 pixel per axis
        # changes a value by < 1 level, so the new output must be within 1 level there.
        flat = _local_range(old) <= 8
        assert diff[flat].max(initial=0) <= 1, (name, kwargs, key)
        assert diff.max() <= edge_bound, (name, kwargs, key, diff.max())
        moved += int((diff > 1).sum())
        total += diff.size
    # Measured: <= 1% of values move by more than 1 level, 3.4% for the rotated black-bordered affine
    # (every pixel along a black border is next to a 255-level edge).
    assert moved <= 0.05 * total, (name, kwargs, moved, total)


def _local_range(images: np.ndarray) -> np.ndarray:
    """Max - min over each value's 3x3 neighbourhood (edge-replicated), per channel."""
    p = np.pad(images, [(0, 0), (1, 1), (1, 1), (0, 0)], mode="edge")
    h, w = images.shape[1:3]
    windows = np.stack([p[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
    return windows.max(axis=0) - windows.min(axis=0)
