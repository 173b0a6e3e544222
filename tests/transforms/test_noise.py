"""Tests of fencebox.transforms.noise: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_noise.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fencebox.testing import batches, check_contract
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform, slice_params
from fencebox.transforms.noise import CoarseDropout, GaussianNoise
from tests.transforms.helpers import (
    NOISE_BAD_PARAMS,
    check_bad_param_raises_spec_error,
    check_spec_round_trip_and_registry,
)
from tests.transforms.helpers import NOISE_FACTORIES as FACTORIES
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.noise"


@pytest.mark.parametrize("key", of_module(sorted(FACTORIES), MODULE))
@settings(max_examples=10, deadline=None)
@given(images=batches(min_side=8, max_side=28), seed=st.integers(0, 2**32 - 1))
def test_contract(key: str, images: np.ndarray, seed: int) -> None:
    check_contract(FACTORIES[key](), images, seed=seed)


@pytest.mark.parametrize("key", of_module(sorted(FACTORIES), MODULE))
def test_spec_round_trip_and_registry(key: str) -> None:
    check_spec_round_trip_and_registry(FACTORIES[key]())


@pytest.mark.parametrize(
    "key", of_module(["gaussian_noise", "coarse_dropout", "pixel_deflection", "tv_min_range"], MODULE)
)
def test_sample_is_cheap_and_per_image(key: str) -> None:
    """A big batch's params are a few numbers per image, sliceable on the batch axis."""
    t = FACTORIES[key]()
    params = t.sample(np.random.default_rng(0), (4096, 224, 224, 3))
    for leaf in params.values():
        assert leaf.shape[0] == 4096 and leaf.size <= 4096 * 8


def test_subset_of_batch_gets_the_same_randomness() -> None:
    """Image i's result depends on its own params only, so combinators may route any subset."""
    images = np.random.default_rng(0).integers(0, 256, (4, 24, 20, 3), dtype=np.uint8)
    for key in ("gaussian_noise_range", "coarse_dropout_many", "pixel_deflection", "tv_min_range"):
        t = FACTORIES[key]()
        params = t.sample(np.random.default_rng(5), images.shape)
        full = t.apply(images, params)
        idx = np.array([3, 1])
        np.testing.assert_array_equal(t.apply(images[idx], slice_params(params, idx)), full[idx])


def test_gaussian_noise_has_the_requested_std_in_grey_levels() -> None:
    images = np.full((3, 64, 64, 3), 128, dtype=np.uint8)  # far from 0 and 255: no clipping
    t = GaussianNoise(sigma=[3.0, 20.0])
    params = t.sample(np.random.default_rng(1), images.shape)
    noise = t.apply(images, params).astype(np.float64) - 128.0
    for i in range(3):
        # 12288 samples: the std estimate's standard error is sigma/157, the mean's sigma/111.  Rounding to
        # integers adds 1/12 to the variance.  The tolerances are > 5 standard errors, and far below
        # what a wrong scale (sigma/255, variance instead of std) would give.
        expected = float(np.sqrt(params["sigma"][i] ** 2 + 1.0 / 12.0))
        assert abs(noise[i].std() - expected) < 0.04 * expected + 0.02
        assert abs(noise[i].mean()) < 0.06 * expected + 0.02
    assert np.ptp(params["sigma"]) > 1.0  # the range really gave different sigmas


def test_gaussian_noise_is_independent_across_pixels_and_channels() -> None:
    images = np.full((1, 64, 64, 3), 128, dtype=np.uint8)
    noise = GaussianNoise(sigma=10.0)(images, rng=3).astype(np.float64) - 128.0
    flat = noise[0].reshape(-1, 3)
    corr = np.corrcoef(flat.T)
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.06  # 4096 samples: std error 0.016
    assert abs(np.corrcoef(noise[0, :, :-1, 0].ravel(), noise[0, :, 1:, 0].ravel())[0, 1]) < 0.06


def test_gaussian_noise_zero_sigma_is_identity_and_surrogate_passes_gradient() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 12, 1), dtype=np.uint8)
    np.testing.assert_array_equal(GaussianNoise(sigma=0.0)(images, rng=0), images)
    t = GaussianNoise(sigma=5.0)
    x = nhwc_uint8_to_nchw_float(images).requires_grad_(True)
    y = t.surrogate(x, t.sample(np.random.default_rng(0), images.shape))
    y.sum().backward()
    assert x.grad is not None and float(x.grad.sum()) > 0.9 * x.numel()  # clipping only stops a few


def test_coarse_dropout_fills_exactly_the_sampled_rectangles() -> None:
    images = np.random.default_rng(0).integers(0, 200, (4, 40, 50, 3), dtype=np.uint8)
    t = CoarseDropout(holes=[1, 4], hole_height=[0.1, 0.3], hole_width=[0.2, 0.4], fill=255)
    params = t.sample(np.random.default_rng(2), images.shape)
    out = t.apply(images, params)
    expected = images.copy()
    for i in range(4):
        used = params["height"][i] > 0
        assert 1 <= used.sum() <= 4
        for top, left, hh, ww in zip(
            *(params[k][i][used] for k in ("top", "left", "height", "width")), strict=True
        ):
            assert (
                4 <= hh <= 12 and 10 <= ww <= 20
            )  # round(0.1*40)..round(0.3*40), round(0.2*50)..round(0.4*50)
            assert top >= 0 and top + hh <= 40 and left >= 0 and left + ww <= 50
            expected[i, top : top + hh, left : left + ww] = 255
    np.testing.assert_array_equal(out, expected)
    assert (out == 255).all(axis=-1).sum() >= 4 * 4 * 10  # every image has at least one real hole


def test_coarse_dropout_surrogate_is_the_same_mask_multiply() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 30, 30, 3), dtype=np.uint8)
    t = CoarseDropout(holes=3, fill=0)
    params = t.sample(np.random.default_rng(0), images.shape)
    x = nhwc_uint8_to_nchw_float(images).requires_grad_(True)
    y = t.surrogate(x, params)
    y.sum().backward()
    assert x.grad is not None
    dropped = torch.from_numpy(t.mask(params, 30, 30))[:, None].expand_as(x)
    assert float(x.grad[dropped].abs().max()) == 0.0 and float(x.grad[~dropped].min()) == 1.0


@pytest.mark.parametrize(
    ("cls", "kwargs", "param"),
    of_module(NOISE_BAD_PARAMS, MODULE),
)
def test_bad_params_raise_spec_error_naming_the_parameter(
    cls: type[Transform], kwargs: dict, param: str
) -> None:
    check_bad_param_raises_spec_error(cls, kwargs, param)
