"""Tests of fencebox.transforms.geometric: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_geometric.py.)
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from fencebox.chain import Chain
from fencebox.spec import load_chain
from fencebox.testing import batches, check_contract
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform
from fencebox.transforms.geometric import Affine, Flip, RandomCrop
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

MODULE = "fencebox.transforms.geometric"


@FEW
@given(
    batches(min_side=2), st.sampled_from(["reflect", "constant"]), st.floats(0.0, 180.0), st.floats(0.0, 0.5)
)
def test_contract_affine(images: np.ndarray, border: str, rotate: float, shift: float) -> None:
    check_contract(Affine(border=border, max_rotate=rotate, max_shift=shift, scale=[0.5, 2.0]), images)


@FEW
@given(batches(min_side=2), st.floats(0.05, 1.0), st.floats(0.0, 1.0))
def test_contract_random_crop(images: np.ndarray, lo: float, width: float) -> None:
    check_contract(RandomCrop(scale=[lo, lo + (1.0 - lo) * width]), images)


@FEW
@given(batches(min_side=1), st.floats(0.0, 1.0))
def test_contract_flip(images: np.ndarray, p: float) -> None:
    check_contract(Flip(p=p), images)


@pytest.mark.parametrize("t", of_module(ALL, MODULE), ids=lambda t: t.name)
@pytest.mark.parametrize("shape", of_module([(2, 31, 17, 1), (2, 24, 40, 3)], MODULE))
def test_defaults_exact_on_noise(t: Transform, shape: tuple[int, int, int, int]) -> None:
    check_defaults_exact_on_noise(t, shape)


def test_flip_p1_is_np_flip_and_p0_identity() -> None:
    images = noise(3, 9, 14, 3)
    np.testing.assert_array_equal(Flip(p=1.0)(images, rng=0), np.flip(images, axis=2))
    np.testing.assert_array_equal(Flip(p=0.0)(images, rng=0), images)
    x = nhwc_uint8_to_nchw_float(images)
    t = Flip(p=1.0)
    torch.testing.assert_close(t.surrogate(x, t.sample(np.random.default_rng(0), images.shape)), x.flip(-1))


def test_random_crop_full_is_identity() -> None:
    images = noise(3, 23, 31, 3)
    np.testing.assert_array_equal(RandomCrop(scale=[1.0, 1.0])(images, rng=4), images)


def test_random_crop_matches_cv2_resize_of_the_crop() -> None:
    images = smooth(3, 40, 50, 3, seed=2)
    t = RandomCrop(scale=[0.5, 0.9])
    out = t(images, rng=1)
    params = t.sample(np.random.default_rng(1), images.shape)
    for i, s in enumerate(params["scale"]):
        ch, cw = round(s * 40), round(s * 50)
        best = min(
            int(np.abs(cv2.resize(images[i, y : y + ch, x : x + cw], (50, 40)).astype(int) - out[i]).max())
            for y in range(40 - ch + 1)
            for x in range(50 - cw + 1)
        )
        assert best <= 1


def test_affine_identity_parameters() -> None:
    images = noise(2, 17, 26, 1)
    t = Affine(max_shift=0.0, scale=[1.0, 1.0], max_rotate=0.0)
    np.testing.assert_array_equal(t(images, rng=0), images)


@pytest.mark.parametrize("border", ["reflect", "constant"])
def test_affine_matches_cv2_warp_affine(border: str) -> None:
    images = smooth(3, 48, 64, 3, seed=4)
    t = Affine(max_rotate=40.0, max_shift=0.2, scale=[0.7, 1.3], border=border)
    params = t.sample(np.random.default_rng(3), images.shape)
    out = t.apply(images, params)
    cx, cy = 63 / 2.0, 47 / 2.0
    for i in range(3):
        theta, s = np.deg2rad(params["angle"][i]), params["scale"][i]
        tx, ty = params["shift"][i, 0] * 64, params["shift"][i, 1] * 48
        a = s * np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        m = np.hstack([a, (np.array([cx + tx, cy + ty]) - a @ [cx, cy])[:, None]])
        mode = cv2.BORDER_REFLECT if border == "reflect" else cv2.BORDER_CONSTANT
        ref = cv2.warpAffine(images[i], m, (64, 48), flags=cv2.INTER_LINEAR, borderMode=mode, borderValue=0)
        diff = np.abs(ref.astype(int) - out[i].astype(int))
        # Same geometry: within rounding inside; at black edges OpenCV's fixed-point coordinates differ by <= 1/32 px.
        assert diff.max() <= (1 if border == "reflect" else 4) and diff.mean() < 0.2, (
            diff.max(),
            diff.mean(),
        )


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


def test_presets_and_spec_round_trip() -> None:
    images = noise(2, 32, 24, 3)
    for preset in ("guo2018-crop", "xie2018"):
        chain = load_chain(preset)
        assert chain(images, rng=0).shape == images.shape
    for t in (*ALL, Affine(border="constant"), ResizePad(out_size=64)):
        chain = load_chain(str(t))
        assert isinstance(chain, Chain) and len(chain) == 1
        again = chain[0]
        assert again == t
        np.testing.assert_array_equal(again(images, rng=3), t(images, rng=3))
