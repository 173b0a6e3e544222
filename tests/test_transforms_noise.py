"""Noise, dropout and denoising transforms: the shared contract, then the behaviour a user relies on."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from skimage import data
from skimage.restoration import denoise_wavelet

from fencebox.errors import InputError, SpecError
from fencebox.registry import list_transforms
from fencebox.spec import build, load_chain
from fencebox.testing import batches, check_contract
from fencebox.torch_util import nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Transform, slice_params, to_uint8
from fencebox.transforms.denoise import NLMeans, TVMin
from fencebox.transforms.noise import CoarseDropout, GaussianNoise
from fencebox.transforms.pixel_deflection import PixelDeflection

FACTORIES: dict[str, Callable[[], Transform]] = {
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


def _photo(h: int = 96, w: int = 80, gray: bool = False) -> np.ndarray:
    """A downscaled scikit-image photo as a 1-image uint8 batch (ships with scikit-image, no download)."""
    if gray:
        return cv2.resize(data.camera(), (w, h), interpolation=cv2.INTER_AREA)[None, :, :, None]
    return cv2.resize(data.astronaut(), (w, h), interpolation=cv2.INTER_AREA)[None]


def _crop(h: int, w: int, gray: bool = False) -> np.ndarray:
    """A full-resolution crop of a scikit-image photo (natural detail per pixel) as a 1-image batch."""
    if gray:
        return np.ascontiguousarray(data.camera()[100 : 100 + h, 200 : 200 + w, None][None])
    return np.ascontiguousarray(data.astronaut()[60 : 60 + h, 180 : 180 + w][None])


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean())


def _tv(images: np.ndarray) -> float:
    """Anisotropic total variation of a batch, in grey levels."""
    x = images.astype(np.float64)
    return float(np.abs(np.diff(x, axis=1)).sum() + np.abs(np.diff(x, axis=2)).sum())


# ----- the shared contract --------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(FACTORIES))
@settings(max_examples=10, deadline=None)
@given(images=batches(min_side=8, max_side=28), seed=st.integers(0, 2**32 - 1))
def test_contract(key: str, images: np.ndarray, seed: int) -> None:
    check_contract(FACTORIES[key](), images, seed=seed)


@pytest.mark.parametrize("key", sorted(FACTORIES))
def test_spec_round_trip_and_registry(key: str) -> None:
    t = FACTORIES[key]()
    assert t.name in list_transforms()
    assert build(t.to_spec()) == t
    assert str(load_chain(str(t))) == str(t)


@pytest.mark.parametrize("key", ["gaussian_noise", "coarse_dropout", "pixel_deflection", "tv_min_range"])
def test_sample_is_cheap_and_per_image(key: str) -> None:
    """A big batch's params are a few numbers per image, sliceable on the batch axis."""
    t = FACTORIES[key]()
    params = t.sample(np.random.default_rng(0), (4096, 224, 224, 3))
    for leaf in params.values():
        assert leaf.shape[0] == 4096 and leaf.size <= 4096 * 8


def test_subset_of_batch_gets_the_same_randomness() -> None:
    """Image i's result depends on its own params only, so combinators may route any subset."""
    images = np.random.default_rng(0).integers(0, 256, (4, 24, 20, 3), dtype=np.uint8)
    for key in ("gaussian_noise_range", "coarse_dropout_many", "pixel_deflection", "tv_min_range"):
        t = FACTORIES[key]()
        params = t.sample(np.random.default_rng(5), images.shape)
        full = t.apply(images, params)
        idx = np.array([3, 1])
        np.testing.assert_array_equal(t.apply(images[idx], slice_params(params, idx)), full[idx])


# ----- gaussian_noise -------------------------------------------------------------------------------


def test_gaussian_noise_has_the_requested_std_in_grey_levels() -> None:
    images = np.full((3, 64, 64, 3), 128, dtype=np.uint8)  # far from 0 and 255: no clipping
    t = GaussianNoise(sigma=[3.0, 20.0])
    params = t.sample(np.random.default_rng(1), images.shape)
    noise = t.apply(images, params).astype(np.float64) - 128.0
    for i in range(3):
        # 12288 samples: the std estimate's standard error is sigma/157, the mean's sigma/111.  Rounding to
        # integers adds 1/12 to the variance.  The tolerances are > 5 standard errors, and far below
        # what a wrong scale (sigma/255, variance instead of std) would give.
        expected = float(np.sqrt(params["sigma"][i] ** 2 + 1.0 / 12.0))
        assert abs(noise[i].std() - expected) < 0.04 * expected + 0.02
        assert abs(noise[i].mean()) < 0.06 * expected + 0.02
    assert np.ptp(params["sigma"]) > 1.0  # the range really gave different sigmas


def test_gaussian_noise_is_independent_across_pixels_and_channels() -> None:
    images = np.full((1, 64, 64, 3), 128, dtype=np.uint8)
    noise = GaussianNoise(sigma=10.0)(images, rng=3).astype(np.float64) - 128.0
    flat = noise[0].reshape(-1, 3)
    corr = np.corrcoef(flat.T)
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 0.06  # 4096 samples: std error 0.016
    assert abs(np.corrcoef(noise[0, :, :-1, 0].ravel(), noise[0, :, 1:, 0].ravel())[0, 1]) < 0.06


def test_gaussian_noise_zero_sigma_is_identity_and_surrogate_passes_gradient() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 12, 1), dtype=np.uint8)
    np.testing.assert_array_equal(GaussianNoise(sigma=0.0)(images, rng=0), images)
    t = GaussianNoise(sigma=5.0)
    x = nhwc_uint8_to_nchw_float(images).requires_grad_(True)
    y = t.surrogate(x, t.sample(np.random.default_rng(0), images.shape))
    y.sum().backward()
    assert x.grad is not None and float(x.grad.sum()) > 0.9 * x.numel()  # clipping only stops a few


# ----- coarse_dropout -------------------------------------------------------------------------------


def test_coarse_dropout_fills_exactly_the_sampled_rectangles() -> None:
    images = np.random.default_rng(0).integers(0, 200, (4, 40, 50, 3), dtype=np.uint8)
    t = CoarseDropout(holes=[1, 4], hole_height=[0.1, 0.3], hole_width=[0.2, 0.4], fill=255)
    params = t.sample(np.random.default_rng(2), images.shape)
    out = t.apply(images, params)
    expected = images.copy()
    for i in range(4):
        used = params["height"][i] > 0
        assert 1 <= used.sum() <= 4
        for top, left, hh, ww in zip(
            *(params[k][i][used] for k in ("top", "left", "height", "width")), strict=True
        ):
            assert (
                4 <= hh <= 12 and 10 <= ww <= 20
            )  # round(0.1*40)..round(0.3*40), round(0.2*50)..round(0.4*50)
            assert top >= 0 and top + hh <= 40 and left >= 0 and left + ww <= 50
            expected[i, top : top + hh, left : left + ww] = 255
    np.testing.assert_array_equal(out, expected)
    assert (out == 255).all(axis=-1).sum() >= 4 * 4 * 10  # every image has at least one real hole


def test_coarse_dropout_surrogate_is_the_same_mask_multiply() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 30, 30, 3), dtype=np.uint8)
    t = CoarseDropout(holes=3, fill=0)
    params = t.sample(np.random.default_rng(0), images.shape)
    x = nhwc_uint8_to_nchw_float(images).requires_grad_(True)
    y = t.surrogate(x, params)
    y.sum().backward()
    assert x.grad is not None
    dropped = torch.from_numpy(t.mask(params, 30, 30))[:, None].expand_as(x)
    assert float(x.grad[dropped].abs().max()) == 0.0 and float(x.grad[~dropped].min()) == 1.0


# ----- pixel_deflection -----------------------------------------------------------------------------


def test_pixel_deflection_changes_about_deflections_pixels_locally() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    deflections, window = 100, 3
    t = PixelDeflection(deflections=deflections, window=window, denoise=False)
    out = t(images, rng=7)
    for i in range(2):
        for c in range(3):
            changed = np.argwhere(out[i, :, :, c] != images[i, :, :, c])
            # Fewer only when a swap repeats a target, picks itself, or copies an equal value.
            assert 0.9 * deflections <= len(changed) <= deflections
            for y, x in changed:
                patch = images[i, max(y - window, 0) : y + window + 1, max(x - window, 0) : x + window + 1, c]
                assert out[i, y, x, c] in patch


def test_pixel_deflection_denoiser_matches_scikit_image() -> None:
    """The batched denoiser is skimage's denoise_wavelet as Prakash et al. call it, within one grey level."""
    gray = np.concatenate([_photo(33, 41, gray=True), _crop(33, 41, gray=True)])
    for images in (_photo(70, 53), gray):
        for sigma in (0.04, None):
            t = PixelDeflection(deflections=150, sigma=sigma)
            params = t.sample(np.random.default_rng(3), images.shape)
            out = t.apply(images, params)
            deflected = t.deflect(images, params).astype(np.float64) / 255.0
            for i in range(images.shape[0]):
                colour = images.shape[3] == 3
                ref = denoise_wavelet(
                    deflected[i] if colour else deflected[i, :, :, 0],
                    sigma=sigma,
                    mode="soft",
                    method="BayesShrink",
                    wavelet="db1",
                    convert2ycbcr=colour,
                    channel_axis=-1 if colour else None,
                )
                diff = np.abs(out[i].astype(int) - to_uint8(ref).reshape(out[i].shape))
                if colour and sigma is None:
                    # skimage counts float-rounding residues (~1e-17) of flat regions in its noise estimate
                    # of Cb and Cr; FenceBox leaves them out, so its estimate there is a few percent higher.
                    assert diff.max() <= 1 and diff.mean() < 0.1
                else:
                    # Off by one only at exact half levels (a zeroed Haar detail leaves (a + b) / 2), where
                    # float32 and skimage's float64 round differently.
                    assert diff.max() <= 1 and diff.mean() < 0.03


def test_pixel_deflection_surrogate_is_exact_and_differentiable() -> None:
    images = _photo(45, 61)
    t = PixelDeflection()
    params = t.sample(np.random.default_rng(0), images.shape)
    x = nhwc_uint8_to_nchw_float(images).requires_grad_(True)
    y = t.surrogate(x, params)
    out = t.apply(images, params)
    assert np.abs(to_uint8(y.detach().permute(0, 2, 3, 1).numpy()).astype(int) - out).max() <= 1
    (y * torch.linspace(0, 1, y.numel()).reshape(y.shape)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0


# ----- nl_means -------------------------------------------------------------------------------------


@pytest.mark.parametrize("gray", [False, True])
def test_nl_means_reduces_noise_on_a_photo(gray: bool) -> None:
    clean = _photo(gray=gray)
    sigma = 5.0 if gray else 8.0  # h=4 is Feature Squeezing's mild setting
    noise = np.random.default_rng(1).normal(0.0, sigma, clean.shape)
    noisy = np.clip(np.rint(clean + noise), 0, 255).astype(np.uint8)
    out = NLMeans()(noisy)
    assert _mse(out, clean) < 0.8 * _mse(noisy, clean)


def test_nl_means_colour_modes() -> None:
    noisy = np.random.default_rng(0).integers(0, 256, (1, 24, 24, 3), dtype=np.uint8)
    assert (NLMeans(h=5.0)(noisy) == NLMeans(h=5.0, h_color=5.0)(noisy)).all()
    assert not (NLMeans(h=5.0)(noisy) == NLMeans(h=5.0, h_color=30.0)(noisy)).all()
    bgr = cv2.fastNlMeansDenoisingColored(np.ascontiguousarray(noisy[0, :, :, ::-1]), None, 5.0, 5.0, 3, 11)
    np.testing.assert_array_equal(NLMeans(h=5.0)(noisy)[0], bgr[:, :, ::-1])
    joint = cv2.fastNlMeansDenoising(noisy[0], None, 5.0, 3, 11)
    np.testing.assert_array_equal(NLMeans(h=5.0, color="rgb")(noisy)[0], joint)


# ----- tv_min ---------------------------------------------------------------------------------------


def test_tv_min_reduces_tv_and_stays_close() -> None:
    clean = _crop(96, 88)
    out = TVMin()(clean, rng=0)
    assert _tv(out) < 0.8 * _tv(clean)
    assert np.abs(out.astype(int) - clean).mean() < 7.0  # grey levels; dropping without refilling: ~50
    gray = _crop(96, 88, gray=True)
    assert _tv(TVMin()(gray, rng=0)) < 0.8 * _tv(gray)


def test_tv_min_ignores_the_values_of_dropped_pixels() -> None:
    """The reconstruction sees only kept pixels: dropped ones may hold anything (an attack included)."""
    images = _photo(40, 36)
    t = TVMin()
    params = t.sample(np.random.default_rng(4), images.shape)
    dropped = t.masks(params, images.shape) == 0
    assert 0.4 < dropped.mean() < 0.6
    tampered = images.copy()
    tampered[dropped] = np.random.default_rng(0).integers(0, 256, int(dropped.sum()), dtype=np.uint8)
    np.testing.assert_array_equal(t.apply(tampered, params), t.apply(images, params))


def test_tv_min_limits() -> None:
    images = _photo(30, 20)
    # Everything kept and no TV term: the solution is the input itself.
    np.testing.assert_array_equal(TVMin(keep_prob=1.0, weight=0.0)(images, rng=0), images)
    # A larger weight smooths more.
    assert _tv(TVMin(weight=0.3)(images, rng=0)) < _tv(TVMin(weight=0.01)(images, rng=0))


def test_tv_min_default_steps_are_near_the_optimum() -> None:
    import fencebox.transforms.denoise as denoise

    images = _photo(48, 40)
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


# ----- errors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "kwargs", "param"),
    [
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
    ],
)
def test_bad_params_raise_spec_error_naming_the_parameter(
    cls: type[Transform], kwargs: dict, param: str
) -> None:
    with pytest.raises(SpecError, match=f"'{param}'"):
        cls(**kwargs)


@pytest.mark.parametrize(
    ("t", "shape"),
    [
        (NLMeans(patch_size=5, search_window=11), (1, 4, 9, 3)),
        (TVMin(), (1, 1, 9, 1)),
        (PixelDeflection(), (2, 9, 1, 3)),
    ],
)
def test_too_small_images_raise_input_error(t: Transform, shape: tuple[int, int, int, int]) -> None:
    with pytest.raises(InputError, match="at least"):
        t(np.zeros(shape, dtype=np.uint8), rng=0)


def test_presets_using_these_transforms_run() -> None:
    images = _photo(32, 40)
    for preset in ("guo2018-tvm", "pixel-deflection"):
        out = load_chain(preset)(images, rng=0)
        assert out.shape == images.shape and out.dtype == np.uint8
