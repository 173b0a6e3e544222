"""Tests of fencebox.transforms.resize_pad: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_geometric.py.)
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fencebox.errors import InputError, SpecError
from fencebox.spec import build
from fencebox.testing import batches, check_contract
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform
from fencebox.transforms.distortion import Elastic, GridDistortion
from fencebox.transforms.geometric import Affine, Flip, RandomCrop
from fencebox.transforms.resize_pad import ResizePad
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.resize_pad"


FEW = settings(max_examples=15, deadline=None)


def smooth(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """Smooth test images (bilinear sampling of them is well-conditioned), values in [1, 255]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    phase = rng.uniform(0, 6, (n, 1, 1, c))
    base = 128 + 120 * np.sin(xx[None, :, :, None] / 7.0 + phase) * np.cos(yy[None, :, :, None] / 9.0)
    return np.clip(np.rint(base), 1, 255).astype(np.uint8)


def noise(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """Uniform noise images with values in [1, 255] (0 is kept for padding)."""
    return np.random.default_rng(seed).integers(1, 256, (n, h, w, c), dtype=np.uint8)


@FEW
@given(batches(min_side=2), st.floats(0.3, 1.0), st.floats(0.0, 1.0))
def test_contract_resize_pad(images: np.ndarray, lo: float, width: float) -> None:
    check_contract(ResizePad(scale=[lo, lo + (1.0 - lo) * width]), images)


@FEW
@given(batches(min_side=2), st.integers(0, 20), st.floats(0.5, 1.5))
def test_contract_resize_pad_out_size(images: np.ndarray, extra: int, hi: float) -> None:
    side = int(np.ceil(hi * max(images.shape[1:3]))) + extra
    check_contract(ResizePad(scale=[0.5, hi], out_size=side), images)


ALL = [ResizePad(), Affine(), RandomCrop(), Flip(p=1.0), GridDistortion(), Elastic()]


@pytest.mark.parametrize("t", of_module(ALL, MODULE), ids=lambda t: t.name)
@pytest.mark.parametrize("shape", of_module([(2, 31, 17, 1), (2, 24, 40, 3)], MODULE))
def test_defaults_exact_on_noise(t: Transform, shape: tuple[int, int, int, int]) -> None:
    check_contract(t, noise(*shape, seed=3), seed=7)


def test_resize_pad_output_size_rule() -> None:
    images = noise(2, 40, 30, 3)
    assert ResizePad().output_shape(images.shape) == (2, 40, 30, 3)
    assert ResizePad()(images, rng=0).shape == (2, 40, 30, 3)
    t = ResizePad(scale=[0.5, 1.2], out_size=56)
    assert t.output_shape(images.shape) == (2, 56, 56, 3)
    assert t(images, rng=0).shape == (2, 56, 56, 3)


def test_resize_pad_scaled_size_and_zero_padding() -> None:
    images = np.full((3, 40, 30, 1), 200, dtype=np.uint8)
    t = ResizePad(scale=[0.5, 1.0])
    params = t.sample(np.random.default_rng(5), images.shape)
    out = t.apply(images, params)
    for i, s in enumerate(params["scale"]):
        rows, cols = np.nonzero(out[i, ..., 0])
        assert rows.max() - rows.min() + 1 == round(s * 40)
        assert cols.max() - cols.min() + 1 == round(s * 30)
        assert (out[i, ..., 0] != 0).sum() == round(s * 40) * round(s * 30)  # a solid box, zeros around it


def test_resize_pad_scale_one_keeps_content_unchanged() -> None:
    images = noise(3, 40, 30, 3, seed=1)
    out = ResizePad(scale=[1.0, 1.0], out_size=50)(images, rng=2)
    tops = set()
    for i in range(3):
        rows, cols = np.nonzero(out[i].any(axis=2))
        top, left = rows.min(), cols.min()
        tops.add((top, left))
        np.testing.assert_array_equal(out[i, top : top + 40, left : left + 30], images[i])
        assert out[i].astype(int).sum() == images[i].astype(int).sum()
    assert len(tops) > 1  # the offset is random per image


def test_resize_pad_matches_cv2_resize() -> None:
    images = smooth(2, 45, 33, 3)
    t = ResizePad(scale=[0.6, 0.95])
    params = t.sample(np.random.default_rng(0), images.shape)
    out = t.apply(images, params)
    for i, s in enumerate(params["scale"]):
        sh, sw = round(s * 45), round(s * 33)
        ref = cv2.resize(images[i], (sw, sh), interpolation=cv2.INTER_LINEAR)
        rows, cols = np.nonzero(out[i].any(axis=2))
        got = out[i, rows.min() : rows.min() + sh, cols.min() : cols.min() + sw]
        assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_resize_pad_that_does_not_fit_is_an_input_error() -> None:
    with pytest.raises(InputError, match="out_size"):
        ResizePad(scale=[0.9, 1.0], out_size=32)(noise(1, 40, 30, 3))


@pytest.mark.parametrize("t", of_module(ALL, MODULE), ids=lambda t: t.name)
def test_gradients_flow_through_surrogate(t: Transform) -> None:
    images = smooth(2, 20, 28, 3)
    x = nhwc_uint8_to_nchw_float(images).requires_grad_(True)
    y = t.surrogate(x, t.sample(np.random.default_rng(0), images.shape))
    (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("cls", "kwargs", "param"),
    of_module(
        [
            (ResizePad, {"min_scale": 0.9, "max_scale": 0.8}, "min_scale"),
            (ResizePad, {"max_scale": 1.2}, "max_scale"),
            (ResizePad, {"min_scale": 0.0}, "min_scale"),
            (ResizePad, {"out_size": 0}, "out_size"),
            (Affine, {"max_rotate": -1.0}, "max_rotate"),
            (Affine, {"max_shift": 2.0}, "max_shift"),
            (Affine, {"min_scale": 1.2, "max_scale": 1.1}, "min_scale"),
            (Affine, {"border": "wrap"}, "border"),
            (RandomCrop, {"min_scale": 0.9, "max_scale": 0.8}, "min_scale"),
            (RandomCrop, {"max_scale": 1.5}, "max_scale"),
            (Flip, {"p": 1.5}, "p"),
            (GridDistortion, {"num_steps": 0}, "num_steps"),
            (GridDistortion, {"distort_limit": 1.5}, "distort_limit"),
            (Elastic, {"sigma": 0.0}, "sigma"),
            (Elastic, {"alpha": -1.0}, "alpha"),
        ],
        MODULE,
    ),
)
def test_bad_params_name_the_param(cls: type[Transform], kwargs: dict[str, Any], param: str) -> None:
    # Specs (files, strings) still accept the old min_/max_ spellings; the error names what was given.
    with pytest.raises(SpecError, match=f"'{param}'"):
        build({"name": cls.name, **kwargs})


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    of_module(
        [
            (ResizePad, {"scale": [0.9, 0.8]}),
            (ResizePad, {"scale": [0.5, 1.2]}),
            (ResizePad, {"scale": 0.0}),
            (Affine, {"scale": [1.2, 1.1]}),
            (RandomCrop, {"scale": [0.9, 0.8]}),
            (RandomCrop, {"scale": [0.5, 1.5]}),
        ],
        MODULE,
    ),
)
def test_bad_ranges_name_the_param(cls: type[Transform], kwargs: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match="'scale'"):
        cls(**kwargs)


@pytest.mark.parametrize("t", of_module(ALL, MODULE), ids=lambda t: t.name)
def test_too_small_images_are_input_errors(t: Transform) -> None:
    small = noise(1, t.min_size - 1, 10, 3) if t.min_size > 1 else noise(1, 0, 10, 3)
    with pytest.raises(InputError, match="at least"):
        t(small, rng=0)
