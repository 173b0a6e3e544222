"""Blurs: Gaussian, motion (FenceBox / albumentations style) and glass (Hendrycks & Dietterich 2019 style).

Every blur filters in float32 on the 0..255 scale with an explicit kernel and OpenCV's ``BORDER_REFLECT``
(scipy's "reflect", edge repeated), then rounds once to uint8.  The torch surrogates run the very same
kernels (a grouped ``conv2d``, one group per image and channel) after the same reflection, so they are
exact up to float rounding: at most one grey level after quantisation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from fencebox.errors import SpecError
from fencebox.transforms.base import Param, Params, Shape, Transform, bounds, per_image
from fencebox.transforms.median import reflect_pad

if TYPE_CHECKING:
    import torch

SIGMA_MIN, SIGMA_MAX = 0.1, 20.0
KERNEL_MAX = 99


# ----- kernels (shared by apply and surrogate) ---------------------------------------------------------


def gaussian_kernel_size(sigma: float) -> int:
    """The odd kernel side covering +-3 sigma (at least 3), used when no kernel size is given."""
    return max(3, 2 * math.ceil(3.0 * float(sigma)) + 1)


def gaussian_kernels(sigmas: np.ndarray, kernel_size: int | None) -> list[np.ndarray]:
    """Per-image normalised 1-d Gaussian kernels (float32), each of its own odd length."""
    return [
        cv2.getGaussianKernel(kernel_size or gaussian_kernel_size(s), float(s), cv2.CV_64F)[:, 0].astype(
            np.float32
        )
        for s in sigmas
    ]


def stack_centred(kernels: list[np.ndarray]) -> np.ndarray:
    """Stack odd-sided 1-d or 2-d kernels into one array, each zero-padded about its centre to the largest.

    OpenCV gets each image's own kernel (a padded one could switch it to another algorithm, changing the
    rounding with the batch); the grouped torch convolution needs them all the same size.
    """
    side = max(k.shape[0] for k in kernels)
    out: np.ndarray = np.zeros((len(kernels), *(side,) * kernels[0].ndim), dtype=np.float32)
    for i, k in enumerate(kernels):
        off = (side - k.shape[0]) // 2
        window = tuple(slice(off, off + k.shape[0]) for _ in range(k.ndim))
        out[i][window] = k
    return out


def motion_kernel(size: int, angle: float, direction: float) -> np.ndarray:
    """A normalised ``size`` x ``size`` kernel holding a line through its centre at ``angle`` degrees.

    As in albumentations' MotionBlur: ``direction`` in [-1, 1] shifts the line along itself, from
    trailing the centre (-1) through symmetric (0) to leading it (1).  Angles are measured from the +x
    axis towards +y (rows grow downwards, so clockwise on screen).
    """
    c = (size - 1) / 2.0
    t = np.clip(np.linspace(-c, c, 2 * size) + direction * c, -c, c)
    theta = math.radians(angle)
    xs = np.rint(c + t * math.cos(theta)).astype(int)
    ys = np.rint(c + t * math.sin(theta)).astype(int)
    kernel = np.zeros((size, size), dtype=np.float32)
    kernel[ys, xs] = 1.0
    return kernel / kernel.sum()


def glass_source_index(seed: int, h: int, w: int, max_delta: int, iterations: int) -> np.ndarray:
    """Flat source pixel of every output pixel after ``iterations`` local random moves (from ``seed``).

    Each iteration every pixel takes the value of a uniformly drawn pixel at most ``max_delta`` away in
    each axis (clipped to the image); iterations compose into one gather.
    """
    gen = np.random.default_rng(int(seed))
    rows = np.repeat(np.arange(h, dtype=np.int32), w)
    cols = np.tile(np.arange(w, dtype=np.int32), h)
    total: np.ndarray | None = None
    for _ in range(iterations):
        delta = gen.integers(-max_delta, max_delta + 1, size=(2, h * w), dtype=np.int32)
        sy = np.clip(rows + delta[0], 0, h - 1)
        sx = np.clip(cols + delta[1], 0, w - 1)
        src = sy * np.int32(w) + sx
        total = src if total is None else total[src]
    assert total is not None
    return total


# ----- the filtering engines --------------------------------------------------------------------------------


def _per_image(x: np.ndarray, out_dtype: type, filt: Callable[[int, np.ndarray], np.ndarray]) -> np.ndarray:
    """Run ``filt(i, image)`` on each HWC (HW for grey) image of an NHWC batch into a new array."""
    n, h, w, c = x.shape
    out: np.ndarray = np.empty((n, h, w, c), dtype=out_dtype)
    for i in range(n):
        out[i] = filt(i, x[i, :, :, 0] if c == 1 else x[i]).reshape(h, w, c)
    return out


def separable_numpy(x: np.ndarray, kernels: list[np.ndarray], out_dtype: type = np.uint8) -> np.ndarray:
    """Filter each NHWC image with its own separable 1-d kernel (rows and columns), reflecting.

    OpenCV computes in float32 whatever the input (uint8 or float32) and, for a uint8 output, rounds to
    nearest once, so a uint8 in and out costs no conversion passes.
    """
    depth = cv2.CV_8U if out_dtype == np.uint8 else cv2.CV_32F
    return _per_image(
        x,
        out_dtype,
        lambda i, img: cv2.sepFilter2D(img, depth, kernels[i], kernels[i], borderType=cv2.BORDER_REFLECT),
    )


def filter2d_numpy(x: np.ndarray, kernels: list[np.ndarray]) -> np.ndarray:
    """Correlate each uint8 NHWC image with its own square 2-d kernel, reflecting; rounded to uint8."""
    return _per_image(
        x, np.uint8, lambda i, img: cv2.filter2D(img, cv2.CV_8U, kernels[i], borderType=cv2.BORDER_REFLECT)
    )


def grouped_conv(x: torch.Tensor, kernels: np.ndarray) -> torch.Tensor:
    """Correlate each NCHW image with its own kernel ``(N, KH, KW)`` (odd sides), reflect-padded, in torch."""
    import torch

    n, c, h, w = x.shape
    kh, kw = kernels.shape[1:]
    weight = torch.from_numpy(np.ascontiguousarray(kernels)).to(device=x.device, dtype=x.dtype)
    weight = weight[:, None].repeat_interleave(c, dim=0)
    padded = reflect_pad(x, kh // 2, kh // 2, kw // 2, kw // 2).reshape(1, n * c, h + kh - 1, w + kw - 1)
    return torch.nn.functional.conv2d(padded, weight, groups=n * c).reshape(n, c, h, w)


def separable_torch(x: torch.Tensor, kernel_list: list[np.ndarray]) -> torch.Tensor:
    """:func:`separable_numpy` in torch: one vertical and one horizontal grouped convolution."""
    kernels = stack_centred(kernel_list)
    return grouped_conv(grouped_conv(x, kernels[:, :, None]), kernels[:, None, :])


def _sigmas(params: Params, n: int, owner: str) -> np.ndarray:
    sigmas = np.asarray(params["sigma"], dtype=np.float64).reshape(-1)
    if sigmas.shape[0] != n:
        raise SpecError(f"{owner}: params hold {sigmas.shape[0]} sigmas for a batch of {n} images")
    if not np.all((sigmas >= SIGMA_MIN) & (sigmas <= SIGMA_MAX)):
        raise SpecError(
            f"{owner}: parameter 'sigma' must be float in [{SIGMA_MIN}, {SIGMA_MAX}], got {sigmas}"
        )
    return sigmas


def _check_odd(owner: str, name: str, value: Any) -> None:
    values = value if isinstance(value, list) else [value]
    if any(v is not None and int(v) % 2 == 0 for v in values):
        raise SpecError(f"{owner}: parameter '{name}' must be odd, got {value!r}")


# ----- transforms -------------------------------------------------------------------------------------------


class GaussianBlur(Transform):
    """Gaussian blur with a per-image sigma (a constant or drawn from a range), reflecting at borders."""

    name = "gaussian_blur"
    params = (
        Param(
            "sigma",
            "float",
            default=1.0,
            low=SIGMA_MIN,
            high=SIGMA_MAX,
            allow_range=True,
            doc="std in pixels",
        ),
        Param(
            "kernel_size",
            "int",
            default=None,
            low=3,
            high=KERNEL_MAX,
            nullable=True,
            doc="odd kernel side; null: 2*ceil(3*sigma)+1",
        ),
    )
    surrogate_kind = "exact"
    min_size = 3

    def __init__(self, sigma: float | Sequence[float] = 1.0, kernel_size: int | None = None) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(sigma=sigma, kernel_size=kernel_size)

    def _check(self) -> None:
        _check_odd(self.name, "kernel_size", self.config["kernel_size"])
        sigma = self.config["sigma"]
        self.randomized = isinstance(sigma, list) and sigma[0] != sigma[1]

    def cost(self, shape: Shape) -> float:
        """Pixel-operations: ``2 * k + 4`` per value for the widest kernel side ``k`` (two separable passes)."""
        k = self.config["kernel_size"] or gaussian_kernel_size(float(bounds(self.config["sigma"])[1]))
        return float(2 * int(k) + 4) * float(math.prod(shape))

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Draw each image's sigma."""
        return {"sigma": per_image(self.config["sigma"], rng, shape[0])}

    def _kernels(self, params: Params, n: int) -> list[np.ndarray]:
        return gaussian_kernels(_sigmas(params, n, self.name), self.config["kernel_size"])

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Blur each image with its own separable Gaussian kernel (OpenCV, float32, rounded once)."""
        return separable_numpy(images, self._kernels(params, images.shape[0]))

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The same kernels and border as a grouped torch convolution (exact)."""
        return separable_torch(x, self._kernels(params, x.shape[0]))


class MotionBlur(Transform):
    """Motion blur: a random straight-line kernel per image (length, angle, direction), reflecting at borders."""

    name = "motion_blur"
    params = (
        Param(
            "kernel_size",
            "int",
            default=[3, 7],
            low=3,
            high=31,
            allow_range=True,
            doc="odd line length in pixels (odd values drawn from a range)",
        ),
        Param(
            "angle", "float", default=[0.0, 360.0], low=-360.0, high=360.0, allow_range=True, doc="degrees"
        ),
        Param(
            "direction",
            "float",
            default=[-1.0, 1.0],
            low=-1.0,
            high=1.0,
            allow_range=True,
            doc="-1 trailing, 0 centred, 1 leading line",
        ),
    )
    surrogate_kind = "exact"
    min_size = 3

    def __init__(
        self,
        kernel_size: int | Sequence[int] = (3, 7),
        angle: float | Sequence[float] = (0.0, 360.0),
        direction: float | Sequence[float] = (-1.0, 1.0),
    ) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(kernel_size=kernel_size, angle=angle, direction=direction)

    def _check(self) -> None:
        _check_odd(self.name, "kernel_size", self.config["kernel_size"])
        self.randomized = any(isinstance(v, list) and v[0] != v[1] for v in self.config.values())

    def cost(self, shape: Shape) -> float:
        """Pixel-operations: ``k² + 4`` per value for the longest line ``k`` (a dense 2-d correlation)."""
        k = int(bounds(self.config["kernel_size"])[1])
        return float(k * k + 4) * float(math.prod(shape))

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Draw each image's line length (odd), angle and direction."""
        n = shape[0]
        ks = self.config["kernel_size"]
        half = [v // 2 for v in ks] if isinstance(ks, list) else ks // 2
        return {
            "kernel_size": 2 * per_image(half, rng, n, integer=True) + 1,
            "angle": per_image(self.config["angle"], rng, n),
            "direction": per_image(self.config["direction"], rng, n),
        }

    def _kernels(self, params: Params, n: int) -> list[np.ndarray]:
        sizes = np.asarray(params["kernel_size"], dtype=np.int64).reshape(-1)
        angles = np.asarray(params["angle"], dtype=np.float64).reshape(-1)
        dirs = np.asarray(params["direction"], dtype=np.float64).reshape(-1)
        if not sizes.shape[0] == angles.shape[0] == dirs.shape[0] == n:
            raise SpecError(f"{self.name}: params do not hold one kernel per image for a batch of {n}")
        if np.any(sizes % 2 == 0) or sizes.min() < 3 or sizes.max() > 31:
            raise SpecError(f"{self.name}: parameter 'kernel_size' must be odd in [3, 31], got {sizes}")
        return [motion_kernel(int(k), a, d) for k, a, d in zip(sizes, angles, dirs, strict=True)]

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Correlate each image with its line kernel (OpenCV filter2D, float32, rounded once)."""
        return filter2d_numpy(images, self._kernels(params, images.shape[0]))

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The same per-image kernels as one grouped torch convolution (exact)."""
        return grouped_conv(x, stack_centred(self._kernels(params, x.shape[0])))


class GlassBlur(Transform):
    """Glass blur: Gaussian blur, local random pixel moves within max_delta, Gaussian blur again.

    Defaults are Hendrycks & Dietterich's severity 1 (sigma 0.7, max_delta 1, 2 iterations).  Their
    original walks the image pixel by pixel, swapping each (interior) pixel with a random neighbour, so
    later swaps see earlier ones and pixels stay a permutation.  Here every pixel of an iteration draws its
    source within ``max_delta`` (inclusive; theirs excludes +max_delta) independently and all move at once
    as one gather (a pixel may be copied twice or dropped; border pixels move too, clipped to the image).
    The field comes from a per-image seed drawn in :meth:`sample`, so apply and surrogate rebuild the same
    one.  The intermediate image stays float (theirs truncates to uint8 between the steps), so the torch
    twin (conv, gather, conv) is exact.
    """

    name = "glass_blur"
    params = (
        Param(
            "sigma",
            "float",
            default=0.7,
            low=SIGMA_MIN,
            high=SIGMA_MAX,
            allow_range=True,
            doc="std in pixels",
        ),
        Param("max_delta", "int", default=1, low=1, high=16, doc="largest pixel move per axis and iteration"),
        Param("iterations", "int", default=2, low=1, high=10, doc="rounds of local pixel moves"),
    )
    surrogate_kind = "exact"
    randomized = True

    def __init__(self, sigma: float | Sequence[float] = 0.7, max_delta: int = 1, iterations: int = 2) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(sigma=sigma, max_delta=max_delta, iterations=iterations)
        self.min_size = max(3, 2 * int(self.config["max_delta"]) + 1)

    def cost(self, shape: Shape) -> float:
        """Pixel-operations per value: two separable blurs (``4 * k`` for the widest kernel side ``k``),
        the composed moves (``iterations`` per pixel) and the rounding."""
        k = gaussian_kernel_size(float(bounds(self.config["sigma"])[1]))
        per_value = 4 * k + int(self.config["iterations"]) + 8
        return float(per_value) * float(math.prod(shape))

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Draw each image's sigma and the seed of its displacement field."""
        n = shape[0]
        return {
            "sigma": per_image(self.config["sigma"], rng, n),
            "seed": rng.integers(0, 2**63 - 1, size=n, dtype=np.int64),
        }

    def _plan(self, params: Params, n: int, h: int, w: int) -> tuple[list[np.ndarray], np.ndarray]:
        kernels = gaussian_kernels(_sigmas(params, n, self.name), None)
        seeds = np.asarray(params["seed"]).reshape(-1)
        if seeds.shape[0] != n:
            raise SpecError(f"{self.name}: params hold {seeds.shape[0]} seeds for a batch of {n} images")
        d, iters = int(self.config["max_delta"]), int(self.config["iterations"])
        index = np.stack([glass_source_index(int(s), h, w, d, iters) for s in seeds])
        return kernels, index

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Blur, gather every pixel from its displaced source, blur again (float32, rounded once)."""
        n, h, w, c = images.shape
        kernels, index = self._plan(params, n, h, w)
        x = separable_numpy(images, kernels, np.float32)
        moved = np.empty_like(x)
        for i in range(n):
            moved[i] = np.take(x[i].reshape(h * w, c), index[i], axis=0).reshape(h, w, c)
        return separable_numpy(moved, kernels)

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The same blur, gather and blur in torch (exact; gradients follow the moved pixels)."""
        import torch

        n, c, h, w = x.shape
        kernels, index = self._plan(params, n, h, w)
        y = separable_torch(x, kernels).reshape(n, c, h * w)
        idx = torch.from_numpy(index).to(device=x.device, dtype=torch.long)[:, None, :].expand(n, c, h * w)
        return separable_torch(torch.gather(y, 2, idx).reshape(n, c, h, w), kernels)
