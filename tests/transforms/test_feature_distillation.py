"""Tests of fencebox.transforms.feature_distillation: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_codecs.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
from hypothesis import given

from fencebox.testing import batches
from fencebox.transforms.base import Transform
from fencebox.transforms.feature_distillation import FeatureDistillation, distillation_table
from tests.transforms.helpers import (
    CODEC_BAD_SPECS,
    CODECS,
    GRAY,
    PHOTOS,
    check_bad_spec_raises_spec_error,
    check_codec_contract,
    check_codec_spec_round_trip,
    surrogate_levels,
)
from tests.transforms.helpers import CODEC_SETTINGS as SETTINGS
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.feature_distillation"


@pytest.mark.parametrize("t", of_module(CODECS, MODULE), ids=str)
@SETTINGS
@given(images=batches(min_side=1, max_side=40))
def test_contract(t: Transform, images: np.ndarray) -> None:
    check_codec_contract(t, images)


@pytest.mark.parametrize("t", of_module(CODECS, MODULE), ids=str)
def test_spec_round_trips(t: Transform) -> None:
    check_codec_spec_round_trip(t)


def _reference_fd_gray(img: np.ndarray, table: np.ndarray) -> np.ndarray:
    """A deliberately plain per-block SciPy implementation to check the vectorised one against."""
    h, w = img.shape
    padded = np.pad(img.astype(np.float64), ((0, -h % 8), (0, -w % 8)), mode="edge")
    out = np.empty_like(padded)
    for i in range(0, padded.shape[0], 8):
        for j in range(0, padded.shape[1], 8):
            coef = scipy.fft.dctn(padded[i : i + 8, j : j + 8] - 128, norm="ortho")
            out[i : i + 8, j : j + 8] = scipy.fft.idctn(np.round(coef / table) * table, norm="ortho") + 128
    return np.clip(np.rint(out[:h, :w]), 0, 255).astype(np.uint8)


def test_feature_distillation_matches_per_block_scipy() -> None:
    img = GRAY[0, 3:54, 5:70, 0]  # 51 x 65: partial blocks on both edges
    t = FeatureDistillation(low_step=10, high_step=80)
    ours = t(img[None, :, :, None], rng=0)[0, :, :, 0]
    ref = _reference_fd_gray(img, distillation_table(10, 80, 4))
    diff = np.abs(ours.astype(int) - ref.astype(int))
    # Only exact rounding ties (DC = 8 * mean lands on a half step) may break differently in float32: a
    # block off by one level, never more.
    assert diff.max() <= 1 and (diff > 0).mean() < 0.05


def test_feature_distillation_flat_image_keeps_quantised_dc() -> None:
    for v in (0, 37, 128, 200, 255):
        img = np.full((1, 16, 24, 1), v, dtype=np.uint8)
        expected = np.clip(np.rint(np.round(8 * (v - 128) / 25) * 25 / 8 + 128), 0, 255)
        np.testing.assert_array_equal(FeatureDistillation()(img, rng=0), expected)


def test_feature_distillation_table_and_surrogate() -> None:
    table = distillation_table(25, 30, 4)
    assert table[:4, :4].max() == 25 and table[4:, :].min() == 30 and table[:, 4:].min() == 30
    for t in (FeatureDistillation(), FeatureDistillation(colorspace="rgb")):
        diff = surrogate_levels(t, PHOTOS)
        assert diff.mean() < 0.01 and (diff > 1).mean() < 1e-3
        out = t(PHOTOS, rng=0)
        assert 0.5 < np.abs(out.astype(int) - PHOTOS).mean() < 10


@pytest.mark.parametrize(
    ("spec", "words"),
    of_module(CODEC_BAD_SPECS, MODULE),
)
def test_bad_params_raise_spec_error(spec: str, words: list[str]) -> None:
    check_bad_spec_raises_spec_error(spec, words)
