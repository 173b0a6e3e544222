"""Tests of fencebox.transforms.blur: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_filters.py.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.ndimage as ndi
from hypothesis import given, settings
from hypothesis import strategies as st

from fencebox.errors import InputError
from fencebox.testing import batches, check_contract
from fencebox.torch_util import nchw_float_to_nhwc_uint8
from fencebox.transforms.base import Transform
from fencebox.transforms.blur import (
    GaussianBlur,
    GlassBlur,
    MotionBlur,
    gaussian_kernels,
    glass_source_index,
    motion_kernel,
)
from fencebox.transforms.median import Median
from tests.transforms.helpers import FILTERS as ALL_KINDS
from tests.transforms.helpers import (
    FILTERS_BAD_PARAMS,
    FILTERS_TOO_SMALL,
    PHOTO,
    PHOTO_GREY,
    check_bad_params_name_the_parameter,
    check_exact_surrogate_agrees_and_has_gradient,
    check_registered_and_spec_round_trips,
    check_too_small_inputs_raise,
    surrogate_of,
)
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.blur"


RNG = np.random.default_rng(1234)


NOISE = RNG.integers(0, 256, (2, 23, 31, 3), dtype=np.uint8)


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5])
def test_gaussian_blur_matches_scipy(sigma: float) -> None:
    for imgs in (PHOTO, PHOTO_GREY, NOISE):
        out = GaussianBlur(sigma=sigma)(imgs)
        radius = gaussian_kernels(np.array([sigma]), None)[0].shape[0] // 2
        ref = ndi.gaussian_filter(
            imgs.astype(np.float64), sigma=(0, sigma, sigma, 0), mode="reflect", radius=radius
        )
        assert np.abs(out.astype(int) - np.rint(ref)).max() <= 1


def test_gaussian_blur_explicit_kernel_size_and_sigma_range() -> None:
    t = GaussianBlur(sigma=[0.5, 2.0], kernel_size=5)
    assert t.randomized
    images = np.concatenate([PHOTO] * 4)
    params = t.sample(np.random.default_rng(0), images.shape)
    assert len(set(params["sigma"].tolist())) == 4
    out = t.apply(images, params)
    for i, s in enumerate(params["sigma"]):
        ref = ndi.gaussian_filter(
            images[i].astype(np.float64), sigma=(s, s, 0), mode="reflect", radius=(2, 2, 0)
        )
        assert np.abs(out[i].astype(int) - np.rint(ref)).max() <= 1


def test_motion_kernel_is_a_normalised_line() -> None:
    k = motion_kernel(5, 0.0, 0.0)
    expected = np.zeros((5, 5), np.float32)
    expected[2] = 0.2
    np.testing.assert_allclose(k, expected)
    k = motion_kernel(7, 90.0, 1.0)  # leading half of a vertical line: the centre and below
    assert np.count_nonzero(k) == 4 and np.all(k[3:, 3] > 0) and np.isclose(k.sum(), 1.0)
    for angle in np.linspace(0, 360, 13):
        kk = motion_kernel(7, float(angle), 0.0)
        assert np.isclose(kk.sum(), 1.0) and kk[3, 3] > 0 and np.count_nonzero(kk) >= 4


def test_motion_blur_matches_scipy_correlate() -> None:
    t = MotionBlur(kernel_size=[3, 9])
    images = np.concatenate([PHOTO] * 3)
    params = t.sample(np.random.default_rng(3), images.shape)
    assert set(params["kernel_size"].tolist()) <= {3, 5, 7, 9}
    out = t.apply(images, params)
    for i in range(3):
        k = motion_kernel(int(params["kernel_size"][i]), params["angle"][i], params["direction"][i])
        ref = ndi.correlate(images[i].astype(np.float64), k[:, :, None].astype(np.float64), mode="reflect")
        assert np.abs(out[i].astype(int) - np.rint(ref)).max() <= 1


def test_glass_source_moves_stay_local_and_follow_the_seed() -> None:
    h, w, d, iters = 30, 41, 2, 3
    idx = glass_source_index(7, h, w, d, iters)
    np.testing.assert_array_equal(idx, glass_source_index(7, h, w, d, iters))
    assert not np.array_equal(idx, glass_source_index(8, h, w, d, iters))
    sy, sx = np.divmod(idx, w)
    yy, xx = np.divmod(np.arange(h * w), w)
    assert np.abs(sy - yy).max() <= d * iters and np.abs(sx - xx).max() <= d * iters
    assert idx.min() >= 0 and idx.max() < h * w
    assert np.mean(idx != np.arange(h * w)) > 0.5


def test_glass_blur_is_blur_gather_blur() -> None:
    t = GlassBlur(sigma=0.8, max_delta=2, iterations=2)
    images = np.concatenate([PHOTO] * 2)
    params = t.sample(np.random.default_rng(11), images.shape)
    out = t.apply(images, params)
    radius = gaussian_kernels(np.array([0.8]), None)[0].shape[0] // 2
    for i in range(2):
        blur1 = ndi.gaussian_filter(
            images[i].astype(np.float64), (0.8, 0.8, 0), mode="reflect", radius=(radius,) * 2 + (0,)
        )
        idx = glass_source_index(int(params["seed"][i]), 64, 96, 2, 2)
        moved = blur1.reshape(-1, 3)[idx].reshape(blur1.shape)
        ref = ndi.gaussian_filter(moved, (0.8, 0.8, 0), mode="reflect", radius=(radius,) * 2 + (0,))
        assert np.abs(out[i].astype(int) - np.rint(ref)).max() <= 1
    plain = GaussianBlur(sigma=0.8)(images)
    assert np.abs(out.astype(int) - plain).mean() > 1  # the moves matter


@pytest.mark.parametrize("t", of_module(ALL_KINDS, MODULE), ids=str)
def test_surrogate_agrees_with_apply_and_has_gradient(t: Transform) -> None:
    check_exact_surrogate_agrees_and_has_gradient(t, RNG.integers(0, 256, (1, 40, 60, 3), dtype=np.uint8))


@settings(max_examples=15, deadline=None)
@given(batches(min_side=3, max_side=28), st.floats(0.1, 4.0), st.sampled_from([None, 3, 7]))
def test_contract_gaussian(images: np.ndarray, sigma: float, kernel_size: int | None) -> None:
    check_contract(GaussianBlur(sigma=[0.1, sigma], kernel_size=kernel_size), images)


@settings(max_examples=15, deadline=None)
@given(batches(min_side=3, max_side=28), st.sampled_from([[3, 7], [3, 3], [5, 15], 31]))
def test_contract_motion(images: np.ndarray, kernel_size: Any) -> None:
    check_contract(MotionBlur(kernel_size=kernel_size), images)


@settings(max_examples=15, deadline=None)
@given(batches(min_side=3, max_side=28), st.integers(1, 4), st.integers(1, 3))
def test_contract_glass(images: np.ndarray, max_delta: int, iterations: int) -> None:
    t = GlassBlur(sigma=[0.5, 1.2], max_delta=max_delta, iterations=iterations)
    if min(images.shape[1:3]) < t.min_size:
        with pytest.raises(InputError):
            t(images)
        return
    check_contract(t, images)


@pytest.mark.parametrize(
    ("t", "side"),
    of_module(FILTERS_TOO_SMALL, MODULE),
    ids=str,
)
def test_too_small_inputs_raise(t: Transform, side: int) -> None:
    check_too_small_inputs_raise(t, side)


@pytest.mark.parametrize(
    ("name", "kwargs", "param"),
    of_module(FILTERS_BAD_PARAMS, MODULE),
)
def test_bad_params_name_the_parameter(name: str, kwargs: dict[str, Any], param: str) -> None:
    check_bad_params_name_the_parameter(name, kwargs, param)


@pytest.mark.parametrize("t", of_module(ALL_KINDS, MODULE), ids=str)
def test_registered_and_spec_round_trips(t: Transform) -> None:
    check_registered_and_spec_round_trips(t)


def test_blurs_keep_flat_images_flat() -> None:
    flat = np.full((2, 19, 27, 3), 173, np.uint8)
    for t in (GaussianBlur(sigma=[0.5, 3.0]), MotionBlur(), GlassBlur(max_delta=2), Median(size=[2, 9])):
        np.testing.assert_array_equal(t(flat, rng=0), flat)


def test_kernels_wider_than_the_image_reflect_like_scipy() -> None:
    tiny = RNG.integers(0, 256, (1, 3, 5, 3), dtype=np.uint8)
    out, _x, y = surrogate_of(GaussianBlur(sigma=4.0), tiny)  # 25-tap kernel on a 3 x 5 image
    ref = ndi.gaussian_filter(tiny[0].astype(np.float64), (4.0, 4.0, 0), mode="reflect", radius=(12, 12, 0))
    assert np.abs(out[0].astype(int) - np.rint(ref)).max() <= 1
    assert np.abs(nchw_float_to_nhwc_uint8(y).astype(int) - out.astype(int)).max() <= 1
