"""Tests of the codec / frequency-domain transforms: jpeg, webp, feature_distillation, shield."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
import scipy.fft
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from skimage import data

from fencebox import load_chain
from fencebox.chain import Chain
from fencebox.errors import InputError, SpecError
from fencebox.registry import get_transform
from fencebox.testing import batches, check_contract
from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float
from fencebox.transforms._dct import LUMA_TABLE, scaled_table
from fencebox.transforms.base import Transform
from fencebox.transforms.feature_distillation import FeatureDistillation, distillation_table
from fencebox.transforms.jpeg import Jpeg, jpeg_roundtrip
from fencebox.transforms.shield import Shield
from fencebox.transforms.webp import Webp

SETTINGS = settings(max_examples=15, deadline=None)
QUALITIES = (20, 50, 75, 95)
SUBSAMPLINGS = ("4:4:4", "4:2:2", "4:2:0")


def _crop(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(img[:224, :224])


PHOTOS = np.stack([_crop(getattr(data, n)()) for n in ("astronaut", "coffee", "chelsea", "rocket")])
GRAY = _crop(data.camera())[None, :, :, None]


def _pillow_roundtrip(img: np.ndarray, fmt: str, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    buf = io.BytesIO()
    extra: dict[str, Any] = {"subsampling": subsampling} if fmt == "JPEG" and img.shape[-1] == 3 else {}
    pil.save(buf, fmt, quality=quality, **extra)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L" if img.shape[-1] == 1 else "RGB"))
    return out.reshape(img.shape)


def _surrogate_levels(t: Transform, images: np.ndarray, seed: int = 0) -> np.ndarray:
    """|surrogate - apply| in grey levels on the same params."""
    params = t.sample(np.random.default_rng(seed), images.shape)
    exact = t.apply(images, params)
    approx = nchw_float_to_nhwc_uint8(t.surrogate(nhwc_uint8_to_nchw_float(images), params))
    return np.abs(approx.astype(int) - exact.astype(int))


# ----- the shared contract ----------------------------------------------------------------------------

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


@pytest.mark.parametrize("t", CODECS, ids=str)
@SETTINGS
@given(images=batches(min_side=1, max_side=40))
def test_contract(t: Transform, images: np.ndarray) -> None:
    check_contract(t, images, seed=int(images.sum()) % 1000)


@pytest.mark.parametrize("t", CODECS, ids=str)
def test_spec_round_trips(t: Transform) -> None:
    chain = load_chain(str(t))
    assert isinstance(chain, Chain)
    again = chain.children[0]
    assert again == t and again.to_spec() == t.to_spec()
    assert get_transform(t.name) is type(t)


# ----- jpeg -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
@pytest.mark.parametrize("quality", QUALITIES)
def test_jpeg_matches_pillow(quality: int, subsampling: str) -> None:
    t = Jpeg(quality=quality, subsampling=subsampling)
    for batch in (PHOTOS, GRAY):
        ours = t(batch, rng=0)
        ref = np.stack([_pillow_roundtrip(img, "JPEG", quality, subsampling) for img in batch])
        assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
        assert not np.array_equal(ours, batch)  # it really compressed


@pytest.mark.parametrize("subsampling", SUBSAMPLINGS)
@pytest.mark.parametrize("quality", QUALITIES)
def test_jpeg_surrogate_is_close(quality: int, subsampling: str) -> None:
    diff = _surrogate_levels(Jpeg(quality=quality, subsampling=subsampling), PHOTOS)
    assert diff.mean() < 1.0, diff.mean()
    assert np.percentile(diff, 99) <= 6
    gray = _surrogate_levels(Jpeg(quality=quality), GRAY)
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


# ----- webp -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("quality", QUALITIES)
def test_webp_matches_pillow(quality: int) -> None:
    ours = Webp(quality=quality)(PHOTOS, rng=0)
    ref = np.stack([_pillow_roundtrip(img, "WEBP", quality) for img in PHOTOS])
    assert np.abs(ours.astype(int) - ref.astype(int)).max() <= 1
    assert not np.array_equal(ours, PHOTOS)


def test_webp_quality_range_is_drawn_per_image_and_gray_works() -> None:
    t = Webp(quality=[5, 95])
    batch = np.repeat(GRAY[:, :48, :40], 2, axis=0)
    params = t.sample(np.random.default_rng(3), batch.shape)
    assert params["quality"][0] != params["quality"][1]
    out = t.apply(batch, params)
    assert out.shape == batch.shape and not np.array_equal(out[0], out[1])


# ----- feature distillation ---------------------------------------------------------------------------


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
        diff = _surrogate_levels(t, PHOTOS)
        assert diff.mean() < 0.01 and (diff > 1).mean() < 1e-3
        out = t(PHOTOS, rng=0)
        assert 0.5 < np.abs(out.astype(int) - PHOTOS).mean() < 10


# ----- shield -----------------------------------------------------------------------------------------


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


# ----- errors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "words"),
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
)
def test_bad_params_raise_spec_error(spec: str, words: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        load_chain(spec)
    for w in words:
        assert w in str(info.value)


@given(side=st.integers(1, 7), channels=st.sampled_from([1, 3]))
@settings(max_examples=10, deadline=None)
def test_tiny_images(side: int, channels: int) -> None:
    img = np.random.default_rng(side).integers(0, 256, (2, side, side + 2, channels), dtype=np.uint8)
    for t in (Jpeg(), Webp(), FeatureDistillation(), Shield()):
        out = t(img, rng=0)
        assert out.shape == img.shape and out.dtype == np.uint8
        y = t.surrogate(nhwc_uint8_to_nchw_float(img), t.sample(np.random.default_rng(0), img.shape))
        assert torch.isfinite(y).all() and y.shape == (2, channels, side, side + 2)
