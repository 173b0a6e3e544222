"""The Transform contract as reusable checks, for FenceBox's own tests and for plugin authors.

Install the ``testing`` extra (``pip install fencebox[testing]``: hypothesis) and call the checks from
a test of your transform::

    from hypothesis import given
    from fencebox.testing import batches, check_contract, check_invariance

    @given(batches())
    def test_my_transform(images):
        check_contract(MyTransform(), images)

    def test_my_transform_per_image():
        check_invariance(MyTransform(), large_batch(64, 224, 224, 3))

:func:`check_contract` checks one batch (shape, determinism per seed, sample-then-apply, the surrogate,
the declared cost, and per-image invariance on that batch); :func:`check_invariance` checks per-image
invariance alone: an image's output is bit-identical alone, in any batch, at any position and with any
``workers``, given its own slice of the params.  Torch is needed only for the surrogate checks.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fencebox.transforms.base import Transform, apply_parallel, slice_params

__all__ = [
    "batches",
    "check_contract",
    "check_cost",
    "check_invariance",
    "large_batch",
    "small_arrays",
]

WORKER_COUNTS = (1, 2, 3, 4)
"""The ``workers`` values :func:`check_invariance` tries (including counts that split unevenly)."""


@st.composite
def batches(
    draw: Any, min_side: int = 8, max_side: int = 40, channels: tuple[int, ...] = (1, 3)
) -> np.ndarray:
    """Random uint8 NHWC batches: 1-3 images, non-square sizes, 1 or 3 channels, smooth or noisy content."""
    n = draw(st.integers(1, 3))
    h = draw(st.integers(min_side, max_side))
    w = draw(st.integers(min_side, max_side))
    c = draw(st.sampled_from(channels))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["noise", "smooth", "flat"]))
    if kind == "noise":
        return rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    if kind == "flat":
        return np.full((n, h, w, c), draw(st.integers(0, 255)), dtype=np.uint8)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 127.5 + 127.5 * np.sin(xx[None, :, :, None] / 4.0 + rng.uniform(0, 6, (n, 1, 1, c))) * np.cos(
        yy[None, :, :, None] / 5.0
    )
    return np.clip(base, 0, 255).astype(np.uint8)


def small_arrays(max_side: int = 24) -> Any:
    """Plain hypothesis arrays strategy for quick edge cases."""
    return arrays(
        np.uint8, st.tuples(st.integers(1, 2), st.integers(8, max_side), st.integers(8, max_side), st.just(3))
    )


def large_batch(n: int = 64, h: int = 224, w: int = 224, c: int = 3, seed: int = 0) -> np.ndarray:
    """A deterministic batch of ``n`` different images mixing noise, smooth gradients and flat areas.

    Every image differs from the others (so an output that leaks between images shows), and each holds
    several kinds of content (so data-dependent code paths run).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w, c), dtype=np.uint8)
    for i in range(n):
        phase = rng.uniform(0, 6, c).astype(np.float32)
        smooth = 127.5 + 127.5 * np.sin(xx[..., None] / (3.0 + i % 7) + phase) * np.cos(yy[..., None] / 5.0)
        img = np.clip(smooth, 0, 255).astype(np.uint8)
        img[: h // 3, : w // 3] = rng.integers(0, 256, (h // 3, w // 3, c), dtype=np.uint8)
        img[h // 2 :, w // 2 :] = np.uint8(rng.integers(0, 256))
        out[i] = img
    return out


def check_cost(t: Transform, shape: tuple[int, int, int, int]) -> float:
    """Assert the declared cost of ``t`` on ``shape`` is a positive, finite number and return it."""
    cost = t.cost(shape)
    assert isinstance(cost, float | int) and not isinstance(cost, bool), f"{t}: cost is {cost!r}"
    assert math.isfinite(cost) and cost > 0, f"{t}: cost({shape}) = {cost!r}, must be positive and finite"
    return float(cost)


def _assert_same(actual: np.ndarray, expected: np.ndarray, what: str, t: Transform) -> None:
    if actual.shape != expected.shape or not np.array_equal(actual, expected):
        diff = (
            int(np.abs(actual.astype(int) - expected.astype(int)).max())
            if actual.shape == expected.shape
            else "shape"
        )
        raise AssertionError(f"per-image invariance broken by {t}: {what} (largest difference: {diff})")


def check_invariance(
    t: Transform,
    images: np.ndarray,
    seed: int = 0,
    workers: Sequence[int] = WORKER_COUNTS,
    alone: int | None = None,
) -> np.ndarray:
    """Assert that each image's output depends only on the image and its own slice of the params.

    With ``params = t.sample(rng, images.shape)`` and ``out = t.apply(images, params)``, checks that
    ``t.apply`` on a sub-batch (``slice_params`` of the same params) gives the same rows bit for bit:
    each image alone (``alone`` of them, spread over the batch; all when None), the batch reversed and
    shuffled (every position changes), its two halves, and every ``workers`` count of the thread-pool
    split.  Returns ``out``.
    """
    n = images.shape[0]
    params = t.sample(np.random.default_rng(seed), images.shape)
    out = t.apply(images, params)
    picks = (
        np.arange(n) if alone is None or alone >= n else np.unique(np.linspace(0, n - 1, alone).astype(int))
    )
    for i in picks:
        idx = np.array([i])
        _assert_same(t.apply(images[idx], slice_params(params, idx)), out[idx], f"image {i} alone", t)
    if n > 1:
        orders = {
            "reversed": np.arange(n)[::-1].copy(),
            "shuffled": np.random.default_rng(seed + 1).permutation(n),
        }
        for what, order in orders.items():
            _assert_same(t.apply(images[order], slice_params(params, order)), out[order], f"batch {what}", t)
        half = n // 2
        for part in (np.arange(half), np.arange(half, n)):
            if part.size:
                _assert_same(
                    t.apply(images[part], slice_params(params, part)),
                    out[part],
                    f"images {part[0]}..{part[-1]} as their own batch",
                    t,
                )
    for k in workers:
        _assert_same(apply_parallel(t, images, params, k), out, f"workers={k}", t)
    return out


def check_contract(t: Transform, images: np.ndarray, seed: int = 0, atol_levels: float = 1.0) -> np.ndarray:
    """Assert the Transform contract on one batch and return the output.

    - output is uint8 NHWC with the declared output shape;
    - the same seed gives the same output, and splitting across workers does not change it;
    - ``sample`` then ``apply`` equals ``__call__`` with the same seed;
    - the declared ``cost`` is positive and finite;
    - per-image invariance holds on this batch (:func:`check_invariance`);
    - ``surrogate`` is finite, in range, differentiable, and for exact transforms agrees with ``apply``
      on the same params within ``atol_levels`` grey levels (after rounding).
    """
    import torch

    from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float

    out1 = t(images, rng=seed)
    out2 = t(images, rng=seed)
    assert out1.dtype == np.uint8
    assert out1.ndim == 4
    assert out1.shape == t.output_shape(images.shape), (out1.shape, t.output_shape(images.shape))
    np.testing.assert_array_equal(out1, out2)
    if images.shape[0] > 1:
        np.testing.assert_array_equal(out1, t(images, rng=seed, workers=2))
    params = t.sample(np.random.default_rng(seed), images.shape)
    np.testing.assert_array_equal(out1, t.apply(images, params))
    check_cost(t, images.shape)
    check_invariance(t, images, seed=seed)

    x = nhwc_uint8_to_nchw_float(images).requires_grad_(True)
    y = t.surrogate(x, params)
    assert y.shape == (out1.shape[0], out1.shape[3], out1.shape[1], out1.shape[2])
    assert torch.isfinite(y).all()
    assert float(y.detach().min()) >= -1e-4 and float(y.detach().max()) <= 1 + 1e-4
    if y.requires_grad:
        y.sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
    if t.surrogate_kind == "exact":
        diff = np.abs(nchw_float_to_nhwc_uint8(y).astype(int) - out1.astype(int))
        assert diff.max() <= atol_levels, f"surrogate and apply differ by up to {diff.max()} levels"
    return out1
