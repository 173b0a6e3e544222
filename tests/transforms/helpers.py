"""Shared case lists, test images and check bodies for the transform families' test modules.

Each transform module's test file runs its family's shared checks on its own transforms only (picked
with ``tests.transforms.select.of_module``); the lists, image makers and check bodies live here once
instead of being copied into every file of the family.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from hypothesis import settings
from PIL import Image
from skimage import data

from fencebox.chain import Chain
from fencebox.errors import InputError, SpecError
from fencebox.registry import get_transform, list_transforms
from fencebox.spec import build, load_chain
from fencebox.testing import check_contract
from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform
from fencebox.transforms.blur import GaussianBlur, GlassBlur, MotionBlur
from fencebox.transforms.denoise import NLMeans, TVMin
from fencebox.transforms.distortion import Elastic, GridDistortion
from fencebox.transforms.feature_distillation import FeatureDistillation
from fencebox.transforms.geometric import Affine, Flip, RandomCrop
from fencebox.transforms.jpeg import Jpeg
from fencebox.transforms.median import Median
from fencebox.transforms.noise import CoarseDropout, GaussianNoise
from fencebox.transforms.pixel_deflection import PixelDeflection
from fencebox.transforms.resize_pad import ResizePad
from fencebox.transforms.shield import Shield
from fencebox.transforms.webp import Webp

# --- noise family: noise, pixel_deflection, denoise -------------------------------------------------------

NOISE_FACTORIES: dict[str, Callable[[], Transform]] = {
    "gaussian_noise": GaussianNoise,
    "gaussian_noise_range": lambda: GaussianNoise(sigma=[0.0, 40.0]),
    "coarse_dropout": CoarseDropout,
    "coarse_dropout_many": lambda: CoarseDropout(
        holes=[0, 6], hole_height=0.3, hole_width=[0.05, 0.5], fill=200
    ),
    "pixel_deflection": PixelDeflection,
    "pixel_deflection_estimated": lambda: PixelDeflection(deflections=50, window=2, sigma=None),
    "pixel_deflection_raw": lambda: PixelDeflection(deflections=300, denoise=False),
    "nl_means": NLMeans,
    "nl_means_rgb": lambda: NLMeans(search_window=13, patch_size=5, h=6.0, color="rgb"),
    "tv_min": lambda: TVMin(iterations=20),
    "tv_min_range": lambda: TVMin(keep_prob=[0.2, 0.8], weight=0.1, iterations=10),
}


def photo(h: int = 96, w: int = 80, gray: bool = False) -> np.ndarray:
    """A downscaled scikit-image photo as a 1-image uint8 batch (ships with scikit-image, no download)."""
    if gray:
        return cv2.resize(data.camera(), (w, h), interpolation=cv2.INTER_AREA)[None, :, :, None]
    return cv2.resize(data.astronaut(), (w, h), interpolation=cv2.INTER_AREA)[None]


def photo_crop(h: int, w: int, gray: bool = False) -> np.ndarray:
    """A full-resolution crop of a scikit-image photo (natural detail per pixel) as a 1-image batch."""
    if gray:
        return np.ascontiguousarray(data.camera()[100 : 100 + h, 200 : 200 + w, None][None])
    return np.ascontiguousarray(data.astronaut()[60 : 60 + h, 180 : 180 + w][None])


def mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared difference of two image batches, in grey levels squared."""
    return float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())


NOISE_BAD_PARAMS: list[tuple[type[Transform], dict[str, Any], str]] = [
    (GaussianNoise, {"sigma": -1.0}, "sigma"),
    (GaussianNoise, {"sigma": [9.0, 2.0]}, "sigma"),
    (GaussianNoise, {"std": 3.0}, "std"),
    (CoarseDropout, {"holes": 100}, "holes"),
    (CoarseDropout, {"hole_height": 1.5}, "hole_height"),
    (CoarseDropout, {"hole_width": [0.1, 0.2, 0.3]}, "hole_width"),
    (CoarseDropout, {"fill": 300}, "fill"),
    (PixelDeflection, {"window": 0}, "window"),
    (PixelDeflection, {"deflections": -1}, "deflections"),
    (PixelDeflection, {"sigma": 2.0}, "sigma"),
    (PixelDeflection, {"denoise": "yes"}, "denoise"),
    (NLMeans, {"search_window": 10}, "search_window"),
    (NLMeans, {"patch_size": 4}, "patch_size"),
    (NLMeans, {"patch_size": 15, "search_window": 11}, "patch_size"),
    (NLMeans, {"h": -1.0}, "h"),
    (NLMeans, {"color": "hsv"}, "color"),
    (TVMin, {"keep_prob": 1.5}, "keep_prob"),
    (TVMin, {"weight": -0.1}, "weight"),
    (TVMin, {"iterations": 0}, "iterations"),
]


NOISE_TOO_SMALL: list[tuple[Transform, tuple[int, int, int, int]]] = [
    (NLMeans(patch_size=5, search_window=11), (1, 4, 9, 3)),
    (TVMin(), (1, 1, 9, 1)),
    (PixelDeflection(), (2, 9, 1, 3)),
]


def check_spec_round_trip_and_registry(t: Transform) -> None:
    """The transform is registered and its spec (dict and string forms) builds it back."""
    assert t.name in list_transforms()
    assert build(t.to_spec()) == t
    assert str(load_chain(str(t))) == str(t)


def check_bad_param_raises_spec_error(cls: type[Transform], kwargs: dict[str, Any], param: str) -> None:
    """A bad parameter is a SpecError naming it through specs, and refused by the constructor too."""
    # Through the spec path an unknown name is a SpecError suggesting the right one; called directly,
    # the constructor's real signature refuses an unknown keyword with Python's TypeError.
    with pytest.raises(SpecError, match=f"'{param}'"):
        build({"name": cls.name, **kwargs})
    unknown = set(kwargs) - {p.name for p in cls.params}
    with pytest.raises(TypeError if unknown else SpecError):
        cls(**kwargs)


def check_too_small_raises_input_error(t: Transform, shape: tuple[int, int, int, int]) -> None:
    """An image below the transform's minimum size is an InputError saying what it needs."""
    with pytest.raises(InputError, match="at least"):
        t(np.zeros(shape, dtype=np.uint8), rng=0)


# --- codec family: jpeg, webp, shield, feature_distillation -----------------------------------------------

CODEC_SETTINGS = settings(max_examples=15, deadline=None)


def crop_224(img: np.ndarray) -> np.ndarray:
    """The top-left 224 x 224 of a photo (a classifier-sized input)."""
    return np.ascontiguousarray(img[:224, :224])


PHOTOS = np.stack([crop_224(getattr(data, n)()) for n in ("astronaut", "coffee", "chelsea", "rocket")])


GRAY = crop_224(data.camera())[None, :, :, None]


def pillow_roundtrip(img: np.ndarray, fmt: str, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """One image encoded and decoded by Pillow: the reference our codecs must match."""
    pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
    buf = io.BytesIO()
    extra: dict[str, Any] = {"subsampling": subsampling} if fmt == "JPEG" and img.shape[-1] == 3 else {}
    pil.save(buf, fmt, quality=quality, **extra)
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L" if img.shape[-1] == 1 else "RGB"))
    return out.reshape(img.shape)


def surrogate_levels(t: Transform, images: np.ndarray, seed: int = 0) -> np.ndarray:
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


def check_codec_contract(t: Transform, images: np.ndarray) -> None:
    """The shared transform contract, seeded from the drawn images."""
    check_contract(t, images, seed=int(images.sum()) % 1000)


def check_codec_spec_round_trip(t: Transform) -> None:
    """The transform's string form loads back into an equal transform with the same spec, and is registered."""
    chain = load_chain(str(t))
    assert isinstance(chain, Chain)
    again = chain.children[0]
    assert again == t and again.to_spec() == t.to_spec()
    assert get_transform(t.name) is type(t)


CODEC_BAD_SPECS: list[tuple[str, list[str]]] = [
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
]


def check_bad_spec_raises_spec_error(spec: str, words: list[str]) -> None:
    """A bad codec spec is a SpecError whose message holds every one of ``words``."""
    with pytest.raises(SpecError) as info:
        load_chain(spec)
    for w in words:
        assert w in str(info.value)


# --- geometric family: geometric, resize_pad, distortion --------------------------------------------------

FEW = settings(max_examples=15, deadline=None)


def smooth(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """Smooth test images (bilinear sampling of them is well-conditioned), values in [1, 255]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    phase = rng.uniform(0, 6, (n, 1, 1, c))
    base = 128 + 120 * np.sin(xx[None, :, :, None] / 7.0 + phase) * np.cos(yy[None, :, :, None] / 9.0)
    return np.clip(np.rint(base), 1, 255).astype(np.uint8)


def noise(n: int, h: int, w: int, c: int, seed: int = 0) -> np.ndarray:
    """Uniform noise images with values in [1, 255] (0 is kept for padding)."""
    return np.random.default_rng(seed).integers(1, 256, (n, h, w, c), dtype=np.uint8)


GEOMETRIC = [ResizePad(), Affine(), RandomCrop(), Flip(p=1.0), GridDistortion(), Elastic()]


GEOMETRIC_SHAPES = [(2, 31, 17, 1), (2, 24, 40, 3)]


GEOMETRIC_BAD_PARAMS: list[tuple[type[Transform], dict[str, Any], str]] = [
    (ResizePad, {"min_scale": 0.9, "max_scale": 0.8}, "min_scale"),
    (ResizePad, {"max_scale": 1.2}, "max_scale"),
    (ResizePad, {"min_scale": 0.0}, "min_scale"),
    (ResizePad, {"out_size": 0}, "out_size"),
    (Affine, {"max_rotate": -1.0}, "max_rotate"),
    (Affine, {"max_shift": 2.0}, "max_shift"),
    (Affine, {"min_scale": 1.2, "max_scale": 1.1}, "min_scale"),
    (Affine, {"border": "wrap"}, "border"),
    (RandomCrop, {"min_scale": 0.9, "max_scale": 0.8}, "min_scale"),
    (RandomCrop, {"max_scale": 1.5}, "max_scale"),
    (Flip, {"p": 1.5}, "p"),
    (GridDistortion, {"num_steps": 0}, "num_steps"),
    (GridDistortion, {"distort_limit": 1.5}, "distort_limit"),
    (Elastic, {"sigma": 0.0}, "sigma"),
    (Elastic, {"alpha": -1.0}, "alpha"),
]


GEOMETRIC_BAD_RANGES: list[tuple[type[Transform], dict[str, Any]]] = [
    (ResizePad, {"scale": [0.9, 0.8]}),
    (ResizePad, {"scale": [0.5, 1.2]}),
    (ResizePad, {"scale": 0.0}),
    (Affine, {"scale": [1.2, 1.1]}),
    (RandomCrop, {"scale": [0.9, 0.8]}),
    (RandomCrop, {"scale": [0.5, 1.5]}),
]


def check_defaults_exact_on_noise(t: Transform, shape: tuple[int, int, int, int]) -> None:
    """The contract holds for the default parameters on noise images (no smoothness to hide errors)."""
    check_contract(t, noise(*shape, seed=3), seed=7)


def check_gradients_flow_through_surrogate(t: Transform) -> None:
    """The surrogate passes a finite, non-zero gradient back to its input."""
    images = smooth(2, 20, 28, 3)
    x = nhwc_uint8_to_nchw_float(images).requires_grad_(True)
    y = t.surrogate(x, t.sample(np.random.default_rng(0), images.shape))
    (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def check_bad_param_is_named(cls: type[Transform], kwargs: dict[str, Any], param: str) -> None:
    """A bad parameter given through a spec is a SpecError naming the parameter as it was given."""
    # Specs (files, strings) still accept the old min_/max_ spellings; the error names what was given.
    with pytest.raises(SpecError, match=f"'{param}'"):
        build({"name": cls.name, **kwargs})


def check_bad_range_is_named(cls: type[Transform], kwargs: dict[str, Any]) -> None:
    """A bad scale range given to the constructor is a SpecError naming 'scale'."""
    with pytest.raises(SpecError, match="'scale'"):
        cls(**kwargs)


def check_too_small_is_input_error(t: Transform) -> None:
    """An image below the transform's minimum size is an InputError saying what it needs."""
    small = noise(1, t.min_size - 1, 10, 3) if t.min_size > 1 else noise(1, 0, 10, 3)
    with pytest.raises(InputError, match="at least"):
        t(small, rng=0)


# --- filter family: blur, median ---------------------------------------------------------------------------

PHOTO = np.ascontiguousarray(data.astronaut()[100:164, 150:246])[None]  # 64 x 96 x 3


PHOTO_GREY = np.ascontiguousarray(data.camera()[200:248, 260:340])[None, :, :, None]  # 48 x 80 x 1


PHOTO_COFFEE = np.ascontiguousarray(data.coffee()[::8, ::8])[None]  # 50 x 75 x 3


def surrogate_of(
    t: Transform, images: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """The exact output, the input tensor (with grad) and the surrogate's output on the same params."""
    params = t.sample(np.random.default_rng(seed), images.shape)
    x = nhwc_uint8_to_nchw_float(images).requires_grad_(True)
    y = t.surrogate(x, params)
    return t.apply(images, params), x, y


FILTERS: list[Transform] = [
    Median(size=3),
    Median(size=[2, 5]),
    GaussianBlur(sigma=[0.3, 3.0]),
    GaussianBlur(sigma=1.0, kernel_size=3),
    MotionBlur(),
    MotionBlur(kernel_size=[9, 15]),
    GlassBlur(),
    GlassBlur(sigma=[0.5, 1.5], max_delta=3, iterations=1),
]


FILTERS_TOO_SMALL: list[tuple[Transform, int]] = [
    (Median(size=5), 4),
    (Median(size=2), 1),
    (GaussianBlur(), 2),
    (MotionBlur(), 2),
    (GlassBlur(max_delta=3), 6),
]


FILTERS_BAD_PARAMS: list[tuple[str, dict[str, Any], str]] = [
    ("median", {"size": 1}, "size"),
    ("median", {"size": 10}, "size"),
    ("median", {"size": [5, 3]}, "size"),
    ("median", {"size": 3.5}, "size"),
    ("gaussian_blur", {"sigma": 0.0}, "sigma"),
    ("gaussian_blur", {"sigma": [1.0, 50.0]}, "sigma"),
    ("gaussian_blur", {"kernel_size": 4}, "kernel_size"),
    ("gaussian_blur", {"kernel_size": 1}, "kernel_size"),
    ("motion_blur", {"kernel_size": 4}, "kernel_size"),
    ("motion_blur", {"kernel_size": [3, 8]}, "kernel_size"),
    ("motion_blur", {"direction": 2.0}, "direction"),
    ("motion_blur", {"angle": "left"}, "angle"),
    ("glass_blur", {"max_delta": 0}, "max_delta"),
    ("glass_blur", {"iterations": 0}, "iterations"),
    ("glass_blur", {"sigma": -1.0}, "sigma"),
    ("glass_blur", {"sigmas": 1.0}, "sigma"),
]


def check_exact_surrogate_agrees_and_has_gradient(t: Transform, noise_image: np.ndarray) -> None:
    """An exact surrogate matches apply within rounding ties and passes a dense gradient back.

    ``noise_image`` is one 40 x 60 x 3 noise image, drawn by the calling module from its own generator.
    """
    images = np.concatenate([PHOTO_COFFEE[:, :40, :60], noise_image])
    out, x, y = surrogate_of(t, images, seed=4)
    assert t.surrogate_kind == "exact"
    diff = np.abs(nchw_float_to_nhwc_uint8(y).astype(int) - out.astype(int))
    assert diff.max() <= 1
    # they may differ only where the exact value is a rounding tie (an average of an even number of pixels)
    levels = y.detach().permute(0, 2, 3, 1).numpy() * 255.0
    assert np.all(np.abs(levels[diff > 0] % 1.0 - 0.5) < 1e-3)
    (y * torch.linspace(0, 1, y.numel()).reshape(y.shape)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert float(x.grad.abs().sum()) > 0 and bool((x.grad != 0).float().mean() > 0.2)


def check_too_small_inputs_raise(t: Transform, side: int) -> None:
    """Below the minimum size is an InputError; exactly the minimum size works."""
    with pytest.raises(InputError, match="at least"):
        t(np.zeros((1, side, 20, 3), np.uint8))
    assert t(np.zeros((1, t.min_size, t.min_size, 1), np.uint8)).shape == (1, t.min_size, t.min_size, 1)


def check_bad_params_name_the_parameter(name: str, kwargs: dict[str, Any], param: str) -> None:
    """A bad parameter is a SpecError naming it through specs, and refused by the constructor too."""
    # Through the spec path (files, strings): an unknown name is a SpecError suggesting the right one.
    # Called directly, the constructor's real signature refuses an unknown keyword with Python's TypeError.
    with pytest.raises(SpecError, match=f"'{param}"):
        build({"name": name, **kwargs})
    unknown = set(kwargs) - {p.name for p in get_transform(name).params}
    with pytest.raises(TypeError if unknown else SpecError):
        get_transform(name)(**kwargs)


def check_registered_and_spec_round_trips(t: Transform) -> None:
    """The transform is registered and its string and spec forms load back to the same chain."""
    assert get_transform(t.name) is type(t)
    chain = load_chain(str(t))
    assert chain.to_spec() == load_chain(chain.to_spec()).to_spec()
    assert str(chain) == str(t)
