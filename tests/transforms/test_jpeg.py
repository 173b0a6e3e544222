"""Tests of fencebox.transforms.jpeg: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_codecs.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fencebox.testing import batches
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from fencebox.transforms._dct import LUMA_TABLE, scaled_table
from fencebox.transforms.base import Transform
from fencebox.transforms.feature_distillation import FeatureDistillation
from fencebox.transforms.jpeg import Jpeg, jpeg_roundtrip
from fencebox.transforms.shield import Shield
from fencebox.transforms.webp import Webp
from tests.transforms.helpers import (
    CODEC_BAD_SPECS,
    CODECS,
    GRAY,
    PHOTOS,
    check_bad_spec_raises_spec_error,
    check_codec_contract,
    check_codec_spec_round_trip,
    pillow_roundtrip,
    surrogate_levels,
)
from tests.transforms.helpers import CODEC_SETTINGS as SETTINGS
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.jpeg"


QUALITIES = (20, 50, 75, 95)


SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")


@pytest.mark.parametrize("t", of_module(CODECS, MODULE), ids=str)
@SETTINGS
@given(images=batches(min_side=1, max_side=40))
def test_contract(t: Transform, images: np.ndarray) -> None:
    check_codec_contract(t, images)


@pytest.mark.parametrize("t", of_module(CODECS, MODULE), ids=str)
def test_spec_round_trips(t: Transform) -> None:
    check_codec_spec_round_trip(t)


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
@pytest.mark.parametrize("quality", QUALITIES)
def test_jpeg_matches_pillow(quality: int, subsampling: str) -> None:
    t = Jpeg(quality=quality, subsampling=subsampling)
    for batch in (PHOTOS, GRAY):
        ours = t(batch, rng=0)
        ref = np.stack([pillow_roundtrip(img, "JPEG", quality, subsampling) for img in batch])
        assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
        assert not np.array_equal(ours, batch)  # it really compressed


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
@pytest.mark.parametrize("quality", QUALITIES)
def test_jpeg_surrogate_is_close(quality: int, subsampling: str) -> None:
    diff = surrogate_levels(Jpeg(quality=quality, subsampling=subsampling), PHOTOS)
    assert diff.mean() < 1.0, diff.mean()
    assert np.percentile(diff, 99) <= 6
    gray = surrogate_levels(Jpeg(quality=quality), GRAY)
    assert gray.mean() < 0.5, gray.mean()


def test_jpeg_surrogate_gradient_follows_quality() -> None:
    # Lower quality must throw away more: the surrogate output is further from the input.
    x = nhwc_uint8_to_nchw_float(PHOTOS[:2]).requires_grad_(True)
    y = Jpeg().surrogate(x, {"quality": np.array([10, 95])})
    err = (y - x).abs().flatten(1).mean(1)
    assert float(err[0].detach()) > 2 * float(err[1].detach())
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_jpeg_quality_range_is_drawn_per_image() -> None:
    t = Jpeg(quality=[5, 95])
    batch = np.repeat(PHOTOS[:1, :64, :64], 2, axis=0)
    params = t.sample(np.random.default_rng(3), batch.shape)
    assert params["quality"][0] != params["quality"][1]
    out = t.apply(batch, params)
    assert not np.array_equal(out[0], out[1])
    for i in range(2):
        np.testing.assert_array_equal(out[i], jpeg_roundtrip(batch[i], int(params["quality"][i])))
    assert t.randomized and not Jpeg().randomized


def test_quality_table_is_libjpegs() -> None:
    assert scaled_table(LUMA_TABLE, 50)[0, 0] == 16
    assert scaled_table(LUMA_TABLE, 75)[0, 0] == 8
    assert scaled_table(LUMA_TABLE, 100).max() == 1
    assert scaled_table(LUMA_TABLE, 1).max() == 255
    assert scaled_table(LUMA_TABLE, np.array([10, 90])).shape == (2, 8, 8)


@pytest.mark.parametrize(
    ("spec", "words"),
    of_module(CODEC_BAD_SPECS, MODULE),
)
def test_bad_params_raise_spec_error(spec: str, words: list[str]) -> None:
    check_bad_spec_raises_spec_error(spec, words)


@given(side=st.integers(1, 7), channels=st.sampled_from([1, 3]))
@settings(max_examples=10, deadline=None)
def test_tiny_images(side: int, channels: int) -> None:
    img = np.random.default_rng(side).integers(0, 256, (2, side, side + 2, channels), dtype=np.uint8)
    for t in (Jpeg(), Webp(), FeatureDistillation(), Shield()):
        out = t(img, rng=0)
        assert out.shape == img.shape and out.dtype == np.uint8
        y = t.surrogate(nhwc_uint8_to_nchw_float(img), t.sample(np.random.default_rng(0), img.shape))
        assert torch.isfinite(y).all() and y.shape == (2, channels, side, side + 2)
