"""Tests of fencebox.transforms.distortion: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_geometric.py.)
"""

from __future__ import annotations

from typing import Any

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

MODULE = "fencebox.transforms.distortion"


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
@given(batches(min_side=4), st.integers(1, 10), st.floats(0.0, 0.9))
def test_contract_grid_distortion(images: np.ndarray, steps: int, limit: float) -> None:
    check_contract(GridDistortion(num_steps=steps, distort_limit=limit), images)


@FEW
@given(batches(min_side=4), st.floats(0.0, 60.0), st.floats(0.5, 10.0))
def test_contract_elastic(images: np.ndarray, alpha: float, sigma: float) -> None:
    check_contract(Elastic(alpha=alpha, sigma=sigma), images)


ALL = [ResizePad(), Affine(), RandomCrop(), Flip(p=1.0), GridDistortion(), Elastic()]


@pytest.mark.parametrize("t", of_module(ALL, MODULE), ids=lambda t: t.name)
@pytest.mark.parametrize("shape", of_module([(2, 31, 17, 1), (2, 24, 40, 3)], MODULE))
def test_defaults_exact_on_noise(t: Transform, shape: tuple[int, int, int, int]) -> None:
    check_contract(t, noise(*shape, seed=3), seed=7)


def test_grid_distortion_and_elastic_zero_strength_are_identity() -> None:
    images = noise(2, 21, 13, 3)
    np.testing.assert_array_equal(GridDistortion(distort_limit=0.0)(images, rng=0), images)
    np.testing.assert_array_equal(Elastic(alpha=0.0)(images, rng=0), images)


def test_distortions_change_the_image_and_differ_per_image() -> None:
    images = np.repeat(smooth(1, 48, 40, 3), 2, axis=0)
    for t in (GridDistortion(), Elastic()):
        out = t(images, rng=0)
        assert not np.array_equal(out[0], images[0])
        assert not np.array_equal(out[0], out[1])


def test_elastic_field_comes_from_the_seed() -> None:
    t = Elastic()
    params = t.sample(np.random.default_rng(0), (2, 30, 30, 3))
    assert params["seed"].shape == (2,)
    a = t.grid(params, 0, (30, 30), (30, 30))
    b = t.grid(params, 0, (30, 30), (30, 30))
    c = t.grid(params, 1, (30, 30), (30, 30))
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


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


@pytest.mark.parametrize("t", of_module(ALL, MODULE), ids=lambda t: t.name)
def test_too_small_images_are_input_errors(t: Transform) -> None:
    small = noise(1, t.min_size - 1, 10, 3) if t.min_size > 1 else noise(1, 0, 10, 3)
    with pytest.raises(InputError, match="at least"):
        t(small, rng=0)
