"""Tests of fencebox.transforms.webp: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_codecs.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from fencebox.testing import batches
from fencebox.transforms.base import Transform
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
)
from tests.transforms.helpers import CODEC_SETTINGS as SETTINGS
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.webp"


QUALITIES = (20, 50, 75, 95)


@pytest.mark.parametrize("t", of_module(CODECS, MODULE), ids=str)
@SETTINGS
@given(images=batches(min_side=1, max_side=40))
def test_contract(t: Transform, images: np.ndarray) -> None:
    check_codec_contract(t, images)


@pytest.mark.parametrize("t", of_module(CODECS, MODULE), ids=str)
def test_spec_round_trips(t: Transform) -> None:
    check_codec_spec_round_trip(t)


@pytest.mark.parametrize("quality", QUALITIES)
def test_webp_matches_pillow(quality: int) -> None:
    ours = Webp(quality=quality)(PHOTOS, rng=0)
    ref = np.stack([pillow_roundtrip(img, "WEBP", quality) for img in PHOTOS])
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    assert not np.array_equal(ours, PHOTOS)


def test_webp_quality_range_is_drawn_per_image_and_gray_works() -> None:
    t = Webp(quality=[5, 95])
    batch = np.repeat(GRAY[:, :48, :40], 2, axis=0)
    params = t.sample(np.random.default_rng(3), batch.shape)
    assert params["quality"][0] != params["quality"][1]
    out = t.apply(batch, params)
    assert out.shape == batch.shape and not np.array_equal(out[0], out[1])


@pytest.mark.parametrize(
    ("spec", "words"),
    of_module(CODEC_BAD_SPECS, MODULE),
)
def test_bad_params_raise_spec_error(spec: str, words: list[str]) -> None:
    check_bad_spec_raises_spec_error(spec, words)
