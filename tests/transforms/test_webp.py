"""Tests of fencebox.transforms.webp: the behaviour a user relies on, and the shared contract on its transforms.

(Moved from tests/test_transforms_codecs.py.)
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from PIL import Image
from skimage import data

from fencebox import load_chain
from fencebox.chain import Chain
from fencebox.errors import SpecError
from fencebox.registry import get_transform
from fencebox.testing import batches, check_contract
from fencebox.transforms.base import Transform
from fencebox.transforms.feature_distillation import FeatureDistillation
from fencebox.transforms.jpeg import Jpeg
from fencebox.transforms.shield import Shield
from fencebox.transforms.webp import Webp
from tests.transforms.select import of_module

MODULE = "fencebox.transforms.webp"


SETTINGS = settings(max_examples=15, deadline=None)


QUALITIES = (20, 50, 75, 95)


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
