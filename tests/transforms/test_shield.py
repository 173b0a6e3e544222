"""Tests of fencebox.transforms.shield: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_codecs.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given

from fencebox.errors import InputError
from fencebox.testing import batches
from fencebox.transforms.base import Transform
from fencebox.transforms.jpeg import jpeg_roundtrip
from fencebox.transforms.shield import Shield
from tests.transforms.helpers import (
    CODEC_BAD_SPECS,
    CODECS,
    PHOTOS,
    check_bad_spec_raises_spec_error,
    check_codec_contract,
    check_codec_spec_round_trip,
    surrogate_levels,
)
from tests.transforms.helpers import CODEC_SETTINGS as SETTINGS
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.shield"


@pytest.mark.parametrize("t", of_module(CODECS, MODULE), ids=str)
@SETTINGS
@given(images=batches(min_side=1, max_side=40))
def test_contract(t: Transform, images: np.ndarray) -> None:
    check_codec_contract(t, images)


@pytest.mark.parametrize("t", of_module(CODECS, MODULE), ids=str)
def test_spec_round_trips(t: Transform) -> None:
    check_codec_spec_round_trip(t)


def test_shield_blocks_come_from_their_quality() -> None:
    t = Shield()
    batch = PHOTOS[:2, :45, :60]  # partial blocks on both edges
    params = t.sample(np.random.default_rng(1), batch.shape)
    qmap = params["quality_map"]
    assert qmap.shape == (2, 6, 8) and set(np.unique(qmap)) == {20, 40, 60, 80}
    out = t.apply(batch, params)
    for i in range(2):
        decoded = {q: jpeg_roundtrip(batch[i], q, "4:2:0") for q in (20, 40, 60, 80)}
        for bi in range(qmap.shape[1]):
            for bj in range(qmap.shape[2]):
                window = (slice(8 * bi, 8 * bi + 8), slice(8 * bj, 8 * bj + 8))
                np.testing.assert_array_equal(out[i][window], decoded[int(qmap[i, bi, bj])][window])


def test_shield_is_random_and_surrogate_is_close() -> None:
    t = Shield()
    a, b = t(PHOTOS[:1], rng=1), t(PHOTOS[:1], rng=2)
    assert not np.array_equal(a, b)
    diff = surrogate_levels(t, PHOTOS)
    assert diff.mean() < 1.0, diff.mean()


def test_shield_rejects_mismatched_params() -> None:
    params = Shield().sample(np.random.default_rng(0), (1, 16, 16, 3))
    with pytest.raises(InputError, match="quality_map"):
        Shield().apply(np.zeros((1, 24, 16, 3), np.uint8), params)


@pytest.mark.parametrize(
    ("spec", "words"),
    of_module(CODEC_BAD_SPECS, MODULE),
)
def test_bad_params_raise_spec_error(spec: str, words: list[str]) -> None:
    check_bad_spec_raises_spec_error(spec, words)
