"""The JPEG-family surrogates (jpeg, shield, feature_distillation) against the real transforms.

Two properties an adaptive attacker relies on:
- the surrogate's forward value is close to ``apply`` (libjpeg through OpenCV) on real photos;
- its gradient points where the real transform's does: directional derivatives of the surrogate agree with
  finite differences of a noise-smoothed ``apply`` far better than the identity's (straight-through,
  BPDA) do.  A gradient that is any multiple of the identity must fail the same check.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from fencebox.registry import get_transform
from fencebox.torch_util import nchw_float_to_nhwc_uint8, nhwc_uint8_to_nchw_float
from fencebox.transforms.base import Params, Transform

PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket")


def _photo(name: str, side: int, k: int) -> np.ndarray:
    """A side x side crop of a scikit-image photo shrunk 3x (dense real content at a small size)."""
    img = getattr(data, name)()
    img = cv2.resize(img, (img.shape[1] // 3, img.shape[0] // 3), interpolation=cv2.INTER_AREA)
    y, x = (k * 37) % (img.shape[0] - side), (k * 53) % (img.shape[1] - side)
    return np.ascontiguousarray(img[y : y + side, x : x + side, :3])


@cache
def photos(side: int) -> np.ndarray:
    """One crop of each photo, stacked: (4, side, side, 3) uint8."""
    return np.stack([_photo(n, side, k) for k, n in enumerate(PHOTO_NAMES)])


# ----- forward: the surrogate's value is close to the real codec ----------------------------------------

# (spec, stated bounds in grey levels: mean |surrogate - apply|, max |surrogate - apply|), on four 64x64
# photo crops (and their first channel as gray images); the comments give the values measured.  The mean is the
# float DCT against libjpeg's integer ("islow") DCT and fixed-point colour conversion and upsampling; the
# rare large differences are DCT coefficients that land within libjpeg's integer error of a quantisation
# boundary and so round the other way, which moves a whole basis pattern by one step.
FORWARD_CASES: list[tuple[str, dict[str, Any], float, float]] = [
    ("jpeg", {"quality": 20, "subsampling": "4:2:0"}, 0.4, 16),  # measured 0.23, 10
    ("jpeg", {"quality": 50, "subsampling": "4:2:2"}, 0.7, 30),  # 0.45, 20
    ("jpeg", {"quality": 75, "subsampling": "4:4:4"}, 0.5, 20),  # 0.27, 14
    ("jpeg", {"quality": 95, "subsampling": "4:2:0"}, 0.9, 12),  # 0.69, 8 (chroma up/downsampling)
    ("shield", {"subsampling": "4:2:0"}, 0.7, 18),  # 0.44, 12
    ("shield", {"qualities": [30, 70], "subsampling": "4:4:4"}, 0.5, 12),  # 0.28, 8
    ("shield", {"qualities": [50, 90], "subsampling": "4:2:2"}, 0.8, 30),  # 0.54, 20
    # Same float maths as apply (float32 here): only rounding ties differ, rarely.
    ("feature_distillation", {}, 0.03, 8),  # 0.0, 0 (gray 0.015, 4)
    ("feature_distillation", {"colorspace": "rgb"}, 0.03, 8),  # 0.008, 6
]


def _levels(t: Transform, images: np.ndarray, params: Params) -> np.ndarray:
    exact = t.apply(images, params).astype(np.int64)
    with torch.no_grad():
        approx = nchw_float_to_nhwc_uint8(t.surrogate(nhwc_uint8_to_nchw_float(images), params))
    return np.abs(approx.astype(np.int64) - exact)


@pytest.mark.parametrize(("name", "kwargs", "mean_bound", "max_bound"), FORWARD_CASES)
def test_surrogate_forward_is_close_to_apply_on_photos(
    name: str, kwargs: dict[str, Any], mean_bound: float, max_bound: float
) -> None:
    t = get_transform(name)(**kwargs)
    images = photos(64)
    diff = _levels(t, images, t.sample(np.random.default_rng(0), images.shape))
    assert diff.mean() <= mean_bound, (name, kwargs, diff.mean())
    assert diff.max() <= max_bound, (name, kwargs, diff.max())
    if name != "shield":  # grayscale: one plane, no colour conversion or subsampling
        gray = images[..., :1]
        diff = _levels(t, gray, t.sample(np.random.default_rng(0), gray.shape))
        assert diff.mean() <= mean_bound, (name, kwargs, "gray", diff.mean())


# ----- gradient: the surrogate's derivative follows the smoothed real transform -------------------------

SIGMA = 1.0  # grey levels of Gaussian input noise the real transform is smoothed over
STEP = 1.5  # central-difference step, in grey levels along a unit-variance direction
DRAWS = 8  # noise draws per difference (common random numbers for the + and - sides)
DIRECTIONS = 3
AGREEMENT = 0.45  # the mean cosine a gradient estimator must reach to pass
GRADIENT_CASES: list[tuple[str, dict[str, Any], int]] = [  # (name, parameters, channels)
    ("jpeg", {"quality": 50, "subsampling": "4:2:0"}, 3),
    ("jpeg", {"quality": 75, "subsampling": "4:4:4"}, 3),
    ("jpeg", {"quality": 30, "subsampling": "4:2:2"}, 3),
    ("jpeg", {"quality": 75}, 1),  # guo2018-jpeg on gray images (MNIST)
    ("shield", {}, 3),
    ("feature_distillation", {}, 3),
]


def _smoothed_differences(t: Transform, params: Params, x: np.ndarray, seed: int) -> list[tuple[Any, Any]]:
    """(direction, central difference of E_noise[apply(round(x + noise))] along it), per direction.

    ``apply`` takes uint8, so the input is rounded after adding the noise and the step: averaged over the
    noise, that rounding is smooth too.  Both sides of a difference share their noise draws.
    """
    rng = np.random.default_rng(seed)
    xf = x.astype(np.float64)
    out = []
    for _ in range(DIRECTIONS):
        d = rng.standard_normal(x.shape)
        acc = np.zeros(x.shape)
        for _ in range(DRAWS):
            noisy = xf + rng.normal(0.0, SIGMA, x.shape)
            plus = np.clip(np.rint(noisy + STEP * d), 0, 255).astype(np.uint8)
            minus = np.clip(np.rint(noisy - STEP * d), 0, 255).astype(np.uint8)
            acc += t.apply(plus, params).astype(np.float64) - t.apply(minus, params)
        out.append((d, acc / (2 * STEP * DRAWS)))
    return out


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel(), b.ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def agreement(derivative: Callable[[np.ndarray], np.ndarray], pairs: list[tuple[Any, Any]]) -> float:
    """Mean cosine between an estimator's directional derivatives and the smoothed finite differences."""
    return float(np.mean([_cosine(derivative(d), fd) for d, fd in pairs]))


def _surrogate_derivative(t: Transform, params: Params, x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """d -> J d, the surrogate's Jacobian-vector product at x, in grey levels (NHWC).

    Computed as the derivative of the vector-Jacobian product ``J^T u`` (linear in u) along d: the
    backward pass the attacks use, differentiated once more, on one graph for every direction.
    """
    xt = nhwc_uint8_to_nchw_float(x).requires_grad_(True)
    y = t.surrogate(xt, params)
    u = torch.zeros_like(y, requires_grad=True)
    (vjp,) = torch.autograd.grad(y, xt, u, create_graph=True)

    def jvp(d: np.ndarray) -> np.ndarray:
        dt = torch.from_numpy(d).permute(0, 3, 1, 2).to(xt.dtype)
        (out,) = torch.autograd.grad(vjp, u, dt, retain_graph=True)
        return out.permute(0, 2, 3, 1).double().numpy()

    return jvp


@pytest.mark.parametrize(("name", "kwargs", "channels"), GRADIENT_CASES)
def test_surrogate_gradient_follows_smoothed_apply_and_identity_does_not(
    name: str, kwargs: dict[str, Any], channels: int
) -> None:
    t = get_transform(name)(**kwargs)
    x = np.ascontiguousarray(photos(32)[..., :channels])
    params = t.sample(np.random.default_rng(1), x.shape)
    pairs = _smoothed_differences(t, params, x, seed=2)
    ours = agreement(_surrogate_derivative(t, params, x), pairs)
    # The identity (straight-through, BPDA) at any scale: cosine does not depend on the scale, so
    # 3.7 x identity stands for all of them, and must fail where the surrogate passes.
    identity = agreement(lambda d: 3.7 * d, pairs)
    assert ours >= AGREEMENT, (name, kwargs, ours, identity)
    assert identity < AGREEMENT, (name, kwargs, ours, identity)
    assert ours >= identity + 0.3, (name, kwargs, ours, identity)


def test_surrogate_gradient_is_not_the_identity() -> None:
    # The vector-Jacobian product through JPEG must not be the identity (the straight-through defect):
    # coefficients deep inside a quantisation bin get almost no gradient.
    t = get_transform("jpeg")(quality=50, subsampling="4:4:4")
    x = nhwc_uint8_to_nchw_float(photos(48)).double().requires_grad_(True)
    params = t.sample(np.random.default_rng(0), (4, 48, 48, 3))
    v = torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    (grad,) = torch.autograd.grad((t.surrogate(x, params) * v).sum(), x)
    assert float((grad - v).norm() / v.norm()) > 0.3
    assert float(grad.abs().sum()) > 0
