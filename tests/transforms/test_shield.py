"""Tests of fencebox.transforms.shield: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_codecs.py.)
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from skimage import data

from fencebox import load_chain
from fencebox.chain import Chain
from fencebox.errors import InputError, SpecError
from fencebox.registry import get_transform
from fencebox.testing import batches, check_contract
from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform
from fencebox.transforms.feature_distillation import FeatureDistillation
from fencebox.transforms.jpeg import Jpeg, jpeg_roundtrip
from fencebox.transforms.shield import Shield
from fencebox.transforms.webp import Webp
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.shield"


SETTINGS = settings(max_examples=15, deadline=None)


def _crop(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[:224, :224])


PHOTOS = np.stack([_crop(getattr(data, n)()) for n in ("astronaut", "coffee", "chelsea", "rocket")])


def _surrogate_levels(t: Transform, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """|surrogate - apply| in grey levels on the same params."""
    params = t.sample(np.random.default_rng(seed), images.shape)
    exact = t.apply(images, params)
    approx = nchw_float_to_nhwc_uint8(t.surrogate(nhwc_uint8_to_nchw_float(images), params))
    return np.abs(approx.astype(int) - exact.astype(int))


CODECS = [
    Jpeg(),
    Jpeg(quality=[10, 90], subsampling="4:4:4"),
    Jpeg(quality=5, subsampling="4:2:2"),
    Webp(),
    Webp(quality=[5, 95]),
    FeatureDistillation(),
    FeatureDistillation(colorspace="rgb", low_step=10, high_step=60, low_bands=2),
    Shield(),
    Shield(qualities=[10, 90], block=5, subsampling="4:4:4"),
]


@pytest.mark.parametrize("t", of_module(CODECS, MODULE), ids=str)
@SETTINGS
@given(images=batches(min_side=1, max_side=40))
def test_contract(t: Transform, images: np.ndarray) -> None:
    check_contract(t, images, seed=int(images.sum()) % 1000)


@pytest.mark.parametrize("t", of_module(CODECS, MODULE), ids=str)
def test_spec_round_trips(t: Transform) -> None:
    chain = load_chain(str(t))
    assert isinstance(chain, Chain)
    again = chain.children[0]
    assert again == t and again.to_spec() == t.to_spec()
    assert get_transform(t.name) is type(t)


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
    diff = _surrogate_levels(t, PHOTOS)
    assert diff.mean() < 1.0, diff.mean()


def test_shield_rejects_mismatched_params() -> None:
    params = Shield().sample(np.random.default_rng(0), (1, 16, 16, 3))
    with pytest.raises(InputError, match="quality_map"):
        Shield().apply(np.zeros((1, 24, 16, 3), np.uint8), params)


@pytest.mark.parametrize(
    ("spec", "words"),
    of_module(
        [
            ("jpeg(quality=0)", ["quality", "[1, 100]"]),
            ("jpeg(quality=101)", ["quality", "[1, 100]"]),
            ("jpeg(quality=[90, 10])", ["quality", "lo > hi"]),
            ("jpeg(quality=50.5)", ["quality", "int"]),
            ('jpeg(subsampling="4:1:1")', ["subsampling", "4:2:0"]),
            ("webp(quality=[0, 50])", ["quality", "[1, 100]"]),
            ("shield(qualities=[])", ["qualities", "[1, 100]"]),
            ("shield(qualities=[20, 20])", ["qualities", "distinct"]),
            ("shield(qualities=[20, 120])", ["qualities", "[1, 100]"]),
            ("shield(block=0)", ["block", "[1, 256]"]),
            ("feature_distillation(low_bands=9)", ["low_bands", "[0, 8]"]),
            ("feature_distillation(low_step=40, high_step=30)", ["low_step", "high_step"]),
            ('feature_distillation(colorspace="hsv")', ["colorspace", "ycbcr"]),
        ],
        MODULE,
    ),
)
def test_bad_params_raise_spec_error(spec: str, words: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        load_chain(spec)
    for w in words:
        assert w in str(info.value)
