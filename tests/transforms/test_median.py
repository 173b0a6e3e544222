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

from fencebox.errors import InputError, SpecError
from fencebox.registry import get_transform
from fencebox.spec import build, load_chain
from fencebox.testing import batches, check_contract
from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform
from fencebox.transforms.blur import (
    GaussianBlur,
    GlassBlur,
    MotionBlur,
)
from fencebox.transforms.median import Median, median_torch, reflect_pad, selection_network
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.median"


RNG = np.random.default_rng(1234)


NOISE = RNG.integers(0, 256, (2, 23, 31, 3), dtype=np.uint8)


NOISE_GREY = RNG.integers(0, 256, (3, 17, 12, 1), dtype=np.uint8)


PHOTO = np.ascontiguousarray(skdata.astronaut()[100:164, 150:246])[None]  # 64 x 96 x 3


PHOTO_GREY = np.ascontiguousarray(skdata.camera()[200:248, 260:340])[None, :, :, None]  # 48 x 80 x 1


PHOTO_COFFEE = np.ascontiguousarray(skdata.coffee()[::8, ::8])[None]  # 50 x 75 x 3


PHOTO_TALL = np.ascontiguousarray(skdata.camera()[100:250, 200:270])[None, :, :, None]  # 150 x 70: > 1 stripe


def scipy_median(images: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(ndi.median_filter(images, size=(1, size, size, 1), mode="reflect"))


def surrogate_of(
    t: Transform, images: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    params = t.sample(np.random.default_rng(seed), images.shape)
    x = nhwc_uint8_to_nchw_float(images).requires_grad_(True)
    y = t.surrogate(x, params)
    return t.apply(images, params), x, y


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


ALL_KINDS: list[Transform] = [
    Median(size=3),
    Median(size=[2, 5]),
    GaussianBlur(sigma=[0.3, 3.0]),
    GaussianBlur(sigma=1.0, kernel_size=3),
    MotionBlur(),
    MotionBlur(kernel_size=[9, 15]),
    GlassBlur(),
    GlassBlur(sigma=[0.5, 1.5], max_delta=3, iterations=1),
]


@pytest.mark.parametrize("t", of_module(ALL_KINDS, MODULE), ids=str)
def test_surrogate_agrees_with_apply_and_has_gradient(t: Transform) -> None:
    images = np.concatenate([PHOTO_COFFEE[:, :40, :60], RNG.integers(0, 256, (1, 40, 60, 3), dtype=np.uint8)])
    out, x, y = surrogate_of(t, images, seed=4)
    assert t.surrogate_kind == "exact"
    diff = np.abs(nchw_float_to_nhwc_uint8(y).astype(int) - out.astype(int))
    assert diff.max() <= 1
    # they may differ only where the exact value is a rounding tie (an average of an even number of pixels)
    levels = y.detach().permute(0, 2, 3, 1).numpy() * 255.0
    assert np.all(np.abs(levels[diff > 0] % 1.0 - 0.5) < 1e-3)
    (y * torch.linspace(0, 1, y.numel()).reshape(y.shape)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert float(x.grad.abs().sum()) > 0 and bool((x.grad != 0).float().mean() > 0.2)


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
    of_module(
        [
            (Median(size=5), 4),
            (Median(size=2), 1),
            (GaussianBlur(), 2),
            (MotionBlur(), 2),
            (GlassBlur(max_delta=3), 6),
        ],
        MODULE,
    ),
    ids=str,
)
def test_too_small_inputs_raise(t: Transform, side: int) -> None:
    with pytest.raises(InputError, match="at least"):
        t(np.zeros((1, side, 20, 3), np.uint8))
    assert t(np.zeros((1, t.min_size, t.min_size, 1), np.uint8)).shape == (1, t.min_size, t.min_size, 1)


@pytest.mark.parametrize(
    ("name", "kwargs", "param"),
    of_module(
        [
            ("median", {"size": 1}, "size"),
            ("median", {"size": 10}, "size"),
            ("median", {"size": [5, 3]}, "size"),
            ("median", {"size": 3.5}, "size"),
            ("gaussian_blur", {"sigma": 0.0}, "sigma"),
            ("gaussian_blur", {"sigma": [1.0, 50.0]}, "sigma"),
            ("gaussian_blur", {"kernel_size": 4}, "kernel_size"),
            ("gaussian_blur", {"kernel_size": 1}, "kernel_size"),
            ("motion_blur", {"kernel_size": 4}, "kernel_size"),
            ("motion_blur", {"kernel_size": [3, 8]}, "kernel_size"),
            ("motion_blur", {"direction": 2.0}, "direction"),
            ("motion_blur", {"angle": "left"}, "angle"),
            ("glass_blur", {"max_delta": 0}, "max_delta"),
            ("glass_blur", {"iterations": 0}, "iterations"),
            ("glass_blur", {"sigma": -1.0}, "sigma"),
            ("glass_blur", {"sigmas": 1.0}, "sigma"),
        ],
        MODULE,
    ),
)
def test_bad_params_name_the_parameter(name: str, kwargs: dict[str, Any], param: str) -> None:
    # Through the spec path (files, strings): an unknown name is a SpecError suggesting the right one.
    # Called directly, the constructor's real signature refuses an unknown keyword with Python's TypeError.
    with pytest.raises(SpecError, match=f"'{param}"):
        build({"name": name, **kwargs})
    unknown = set(kwargs) - {p.name for p in get_transform(name).params}
    with pytest.raises(TypeError if unknown else SpecError):
        get_transform(name)(**kwargs)


@pytest.mark.parametrize("t", of_module(ALL_KINDS, MODULE), ids=str)
def test_registered_and_spec_round_trips(t: Transform) -> None:
    assert get_transform(t.name) is type(t)
    chain = load_chain(str(t))
    assert chain.to_spec() == load_chain(chain.to_spec()).to_spec()
    assert str(chain) == str(t)
