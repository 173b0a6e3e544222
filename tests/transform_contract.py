"""The property checks every transform must pass; each transform's test module calls these.

Use: ``check_contract(transform, images)`` inside a hypothesis test fed by :func:`batches`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform


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


def check_contract(t: Transform, images: np.ndarray, seed: int = 0, atol_levels: float = 1.0) -> np.ndarray:
    """Assert the Transform contract on one batch and return the output.

    - output is uint8 NHWC with the declared output shape;
    - the same seed gives the same output, and splitting across workers does not change it;
    - ``sample`` then ``apply`` equals ``__call__`` with the same seed;
    - ``surrogate`` is finite, in range, differentiable, and for exact transforms agrees with ``apply``
      on the same params within ``atol_levels`` grey levels (after rounding).
    """
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
