"""Tests of fencebox.transforms.denoise: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_noise.py.)
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fencebox.spec import load_chain
from fencebox.testing import batches, check_contract
from fencebox.transforms.base import Transform
from fencebox.transforms.denoise import NLMeans, TVMin
from tests.transforms.helpers import (
    NOISE_BAD_PARAMS,
    NOISE_TOO_SMALL,
    check_bad_param_raises_spec_error,
    check_spec_round_trip_and_registry,
    check_too_small_raises_input_error,
    mse,
    photo,
    photo_crop,
)
from tests.transforms.helpers import NOISE_FACTORIES as FACTORIES
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.denoise"


def _tv(images: np.ndarray) -> float:
    """Anisotropic total variation of a batch, in grey levels."""
    x = images.astype(np.float64)
    return float(np.abs(np.diff(x, axis=1)).sum() + np.abs(np.diff(x, axis=2)).sum())


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


@pytest.mark.parametrize("gray", [False, True])
def test_nl_means_reduces_noise_on_a_photo(gray: bool) -> None:
    clean = photo(gray=gray)
    sigma = 5.0 if gray else 8.0  # h=4 is Feature Squeezing's mild setting
    noise = np.random.default_rng(1).normal(0.0, sigma, clean.shape)
    noisy = np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)
    out = NLMeans()(noisy)
    assert mse(out, clean) < 0.8 * mse(noisy, clean)


def test_nl_means_colour_modes() -> None:
    noisy = np.random.default_rng(0).integers(0, 256, (1, 24, 24, 3), dtype=np.uint8)
    assert (NLMeans(h=5.0)(noisy) == NLMeans(h=5.0, h_color=5.0)(noisy)).all()
    assert not (NLMeans(h=5.0)(noisy) == NLMeans(h=5.0, h_color=30.0)(noisy)).all()
    bgr = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(noisy[0, :, :, ::-1]), None, 5.0, 5.0, 3, 11)
    np.testing.assert_array_equal(NLMeans(h=5.0)(noisy)[0], bgr[:, :, ::-1])
    joint = cv2.fastNlMeansDenoising(noisy[0], None, 5.0, 3, 11)
    np.testing.assert_array_equal(NLMeans(h=5.0, color="rgb")(noisy)[0], joint)


def test_tv_min_reduces_tv_and_stays_close() -> None:
    clean = photo_crop(96, 88)
    out = TVMin()(clean, rng=0)
    assert _tv(out) < 0.8 * _tv(clean)
    assert np.abs(out.astype(int) - clean).mean() < 7.0  # grey levels; dropping without refilling: ~50
    gray = photo_crop(96, 88, gray=True)
    assert _tv(TVMin()(gray, rng=0)) < 0.8 * _tv(gray)


def test_tv_min_ignores_the_values_of_dropped_pixels() -> None:
    """The reconstruction sees only kept pixels: dropped ones may hold anything (an attack included)."""
    images = photo(40, 36)
    t = TVMin()
    params = t.sample(np.random.default_rng(4), images.shape)
    dropped = t.masks(params, images.shape) == 0
    assert 0.4 < dropped.mean() < 0.6
    tampered = images.copy()
    tampered[dropped] = np.random.default_rng(0).integers(0, 256, int(dropped.sum()), dtype=np.uint8)
    np.testing.assert_array_equal(t.apply(tampered, params), t.apply(images, params))


def test_tv_min_limits() -> None:
    images = photo(30, 20)
    # Everything kept and no TV term: the solution is the input itself.
    np.testing.assert_array_equal(TVMin(keep_prob=1.0, weight=0.0)(images, rng=0), images)
    # A larger weight smooths more.
    assert _tv(TVMin(weight=0.3)(images, rng=0)) < _tv(TVMin(weight=0.01)(images, rng=0))


def test_tv_min_default_steps_are_near_the_optimum() -> None:
    import fencebox.transforms.denoise as denoise

    images = photo(48, 40)
    t = TVMin()
    params = t.sample(np.random.default_rng(0), images.shape)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    m = torch.from_numpy(t.masks(params, images.shape)).permute(0, 3, 1, 2)

    def energy(z: torch.Tensor) -> float:
        gx = torch.nn.functional.pad(z[..., 1:] - z[..., :-1], (0, 1))
        gy = torch.nn.functional.pad(z[..., 1:, :] - z[..., :-1, :], (0, 0, 0, 1))
        return float((m * (z - x) ** 2).sum() + 0.03 * torch.sqrt(gx**2 + gy**2).sum())

    start = energy(denoise._fill_dropped(x, m))
    default = energy(denoise.tv_inpaint(x, m, 0.03, 50))
    best = energy(denoise.tv_inpaint(x, m, 0.03, 2000))
    assert best <= default <= best + 0.01 * (start - best)


@pytest.mark.parametrize(
    ("cls", "kwargs", "param"),
    of_module(NOISE_BAD_PARAMS, MODULE),
)
def test_bad_params_raise_spec_error_naming_the_parameter(
    cls: type[Transform], kwargs: dict, param: str
) -> None:
    check_bad_param_raises_spec_error(cls, kwargs, param)


@pytest.mark.parametrize(
    ("t", "shape"),
    of_module(NOISE_TOO_SMALL, MODULE),
)
def test_too_small_images_raise_input_error(t: Transform, shape: tuple[int, int, int, int]) -> None:
    check_too_small_raises_input_error(t, shape)


def test_presets_using_these_transforms_run() -> None:
    images = photo(32, 40)
    for preset in ("guo2018-tvm", "pixel-deflection"):
        out = load_chain(preset)(images, rng=0)
        assert out.shape == images.shape and out.dtype == np.uint8
