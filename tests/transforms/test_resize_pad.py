"""Tests of fencebox.transforms.resize_pad: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_geometric.py.)
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fencebox.errors import InputError
from fencebox.testing import batches, check_contract
from fencebox.transforms.base import Transform
from fencebox.transforms.resize_pad import ResizePad
from tests.transforms.helpers import (
    FEW,
    GEOMETRIC_BAD_PARAMS,
    GEOMETRIC_BAD_RANGES,
    check_bad_param_is_named,
    check_bad_range_is_named,
    check_defaults_exact_on_noise,
    check_gradients_flow_through_surrogate,
    check_too_small_is_input_error,
    noise,
    smooth,
)
from tests.transforms.helpers import GEOMETRIC as ALL
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.resize_pad"


@FEW
@given(batches(min_side=2), st.floats(0.3, 1.0), st.floats(0.0, 1.0))
def test_contract_resize_pad(images: np.ndarray, lo: float, width: float) -> None:
    check_contract(ResizePad(scale=[lo, lo + (1.0 - lo) * width]), images)


@FEW
@given(batches(min_side=2), st.integers(0, 20), st.floats(0.5, 1.5))
def test_contract_resize_pad_out_size(images: np.ndarray, extra: int, hi: float) -> None:
    side = int(np.ceil(hi * max(images.shape[1:3]))) + extra
    check_contract(ResizePad(scale=[0.5, hi], out_size=side), images)


@pytest.mark.parametrize("t", of_module(ALL, MODULE), ids=lambda t: t.name)
@pytest.mark.parametrize("shape", of_module([(2, 31, 17, 1), (2, 24, 40, 3)], MODULE))
def test_defaults_exact_on_noise(t: Transform, shape: tuple[int, int, int, int]) -> None:
    check_defaults_exact_on_noise(t, shape)


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
    check_gradients_flow_through_surrogate(t)


@pytest.mark.parametrize(
    ("cls", "kwargs", "param"),
    of_module(GEOMETRIC_BAD_PARAMS, MODULE),
)
def test_bad_params_name_the_param(cls: type[Transform], kwargs: dict[str, Any], param: str) -> None:
    check_bad_param_is_named(cls, kwargs, param)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    of_module(GEOMETRIC_BAD_RANGES, MODULE),
)
def test_bad_ranges_name_the_param(cls: type[Transform], kwargs: dict[str, Any]) -> None:
    check_bad_range_is_named(cls, kwargs)


@pytest.mark.parametrize("t", of_module(ALL, MODULE), ids=lambda t: t.name)
def test_too_small_images_are_input_errors(t: Transform) -> None:
    check_too_small_is_input_error(t)
