"""bit_depth: Feature Squeezing's reference formula, FenceBox's truncation, and the contract."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fencebox.testing import batches, check_contract
from fencebox.transforms.bitdepth import BitDepth

ALL = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)


@pytest.mark.parametrize("bits", range(1, 9))
def test_round_matches_feature_squeezing(bits: int) -> None:
    x = ALL.astype(np.float64) / 255.0
    levels = 2**bits - 1
    ref = np.clip(np.round(np.round(x * levels) / levels * 255.0), 0, 255).astype(np.uint8)
    out = BitDepth(bits=bits)(ALL)
    np.testing.assert_array_equal(out, ref)
    assert len(np.unique(out)) == 2**bits


@pytest.mark.parametrize("bits", range(1, 9))
def test_truncate_keeps_top_bits(bits: int) -> None:
    out = BitDepth(bits=bits, mode="truncate")(ALL)
    np.testing.assert_array_equal(out, (ALL >> (8 - bits)) << (8 - bits))


def test_eight_bits_is_identity() -> None:
    np.testing.assert_array_equal(BitDepth(bits=8)(ALL), ALL)


@settings(max_examples=25, deadline=None)
@given(batches(min_side=1, max_side=20), st.integers(1, 8), st.sampled_from(["round", "truncate"]))
def test_contract(images: np.ndarray, bits: int, mode: str) -> None:
    check_contract(BitDepth(bits=bits, mode=mode), images)
