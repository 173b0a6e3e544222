"""Tests of fencebox.transforms.median: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_filters.py.)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data as skdata

from fencebox.errors import InputError
from fencebox.testing import batches, check_contract
from fencebox.torch_util import nchw_float_to_nhwc_uint8
from fencebox.transforms.base import Transform
from fencebox.transforms.median import Median, median_torch, reflect_pad, selection_network
from tests.transforms.helpers import FILTERS as ALL_KINDS
from tests.transforms.helpers import (
    FILTERS_BAD_PARAMS,
    FILTERS_TOO_SMALL,
    PHOTO,
    PHOTO_COFFEE,
    PHOTO_GREY,
    check_bad_params_name_the_parameter,
    check_exact_surrogate_agrees_and_has_gradient,
    check_registered_and_spec_round_trips,
    check_too_small_inputs_raise,
    surrogate_of,
)
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.median"


RNG = np.random.default_rng(1234)


NOISE = RNG.integers(0, 256, (2, 23, 31, 3), dtype=np.uint8)


NOISE_GREY = RNG.integers(0, 256, (3, 17, 12, 1), dtype=np.uint8)


PHOTO_TALL = np.ascontiguousarray(skdata.camera()[100:250, 200:270])[None, :, :, None]  # 150 x 70: > 1 stripe


def scipy_median(images: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(ndi.median_filter(images, size=(1, size, size, 1), mode="reflect"))


@pytest.mark.parametrize("size", range(2, 10))
@pytest.mark.parametrize(
    "images", [NOISE, NOISE_GREY, PHOTO, PHOTO_GREY, PHOTO_COFFEE, PHOTO_TALL], ids=lambda a: str(a.shape)
)
def test_median_equals_scipy(size: int, images: np.ndarray) -> None:
    np.testing.assert_array_equal(Median(size=size)(images), scipy_median(images, size))


@settings(max_examples=30, deadline=None)
@given(batches(min_side=2, max_side=20), st.integers(2, 9))
def test_median_equals_scipy_property(images: np.ndarray, size: int) -> None:
    t = Median(size=size)
    if min(images.shape[1:3]) < size:
        with pytest.raises(InputError, match=f"at least {size}x{size}"):
            t(images)
        return
    np.testing.assert_array_equal(t(images), scipy_median(images, size))


def test_median_even_size_takes_upper_middle_and_shifts_up_left() -> None:
    ramp = (np.arange(6, dtype=np.uint8) * 10)[None, None, :, None].repeat(2, axis=1)
    # window of x is {x-1, x}: the upper of the two values, i.e. x itself, never an average.
    np.testing.assert_array_equal(Median(size=2)(ramp)[0, 0, :, 0], [0, 10, 20, 30, 40, 50])


def test_median_size_range_draws_per_image() -> None:
    images = np.concatenate([PHOTO_COFFEE[:, :48, :48]] * 6)
    t = Median(size=[2, 9])
    assert t.randomized and t.min_size == 9
    params = t.sample(np.random.default_rng(5), images.shape)
    sizes = params["size"]
    assert sizes.shape == (6,) and len(set(sizes.tolist())) > 1
    out = t.apply(images, params)
    for i, s in enumerate(sizes):
        np.testing.assert_array_equal(out[i : i + 1], scipy_median(images[i : i + 1], int(s)))


@pytest.mark.parametrize("n", [1, 2, 5, 9, 16, 20, 38])
def test_selection_network_selects_every_rank(n: int) -> None:
    values = np.random.default_rng(n).integers(0, 4, (n, 200)).astype(np.uint8)  # many ties
    ranks = tuple(range(n))
    ops, outputs = selection_network(n, ranks)
    env = {i: values[i] for i in range(n)}
    for a, b, lo, hi in ops:
        if lo >= 0:
            env[lo] = np.minimum(env[a], env[b])
        if hi >= 0:
            env[hi] = np.maximum(env[a], env[b])
    np.testing.assert_array_equal(np.stack([env[o] for o in outputs]), np.sort(values, axis=0))


@pytest.mark.parametrize("size", [2, 3, 4, 7])
def test_median_surrogate_is_exact_and_routes_gradient_to_one_pixel(size: int) -> None:
    out, x, y = surrogate_of(Median(size=size), PHOTO)
    np.testing.assert_array_equal(nchw_float_to_nhwc_uint8(y), out)
    y.sum().backward()
    assert x.grad is not None
    # each output takes one input pixel: the gradient is a count of selections, summing to the outputs
    assert float(x.grad.sum()) == pytest.approx(y.numel())
    assert torch.all(x.grad == x.grad.round()) and float(x.grad.abs().max()) >= 1


@pytest.mark.parametrize("size", range(2, 10))
def test_median_surrogate_equals_unfold_kthvalue_on_float_input(size: int) -> None:
    # the harness feeds arbitrary floats, not only multiples of 1/255
    x = torch.rand(2, 3, 13, 17, generator=torch.Generator().manual_seed(size))
    x[0, 0, :5, :5] = 0.5  # ties
    before = size // 2
    padded = reflect_pad(x, before, size - 1 - before, before, size - 1 - before)
    windows = padded.unfold(2, size, 1).unfold(3, size, 1).reshape(2, 3, 13, 17, size * size)
    expected = windows.kthvalue(size * size // 2 + 1, dim=-1).values
    assert torch.equal(median_torch(x, size), expected)


def test_reflect_pad_matches_numpy_symmetric_even_beyond_the_image() -> None:
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    got = reflect_pad(x, 3, 1, 5, 4)[0, 0].numpy()
    np.testing.assert_array_equal(got, np.pad(x[0, 0].numpy(), ((3, 1), (5, 4)), mode="symmetric"))


@pytest.mark.parametrize("t", of_module(ALL_KINDS, MODULE), ids=str)
def test_surrogate_agrees_with_apply_and_has_gradient(t: Transform) -> None:
    check_exact_surrogate_agrees_and_has_gradient(t, RNG.integers(0, 256, (1, 40, 60, 3), dtype=np.uint8))


@settings(max_examples=15, deadline=None)
@given(batches(min_side=2, max_side=28), st.integers(2, 9))
def test_contract_median(images: np.ndarray, size: int) -> None:
    size = min(size, *images.shape[1:3])  # tiny images with the largest window they accept
    check_contract(Median(size=max(2, size)), images)


@settings(max_examples=10, deadline=None)
@given(batches(min_side=9, max_side=28))
def test_contract_median_random_size(images: np.ndarray) -> None:
    check_contract(Median(size=[2, 9]), images)


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
