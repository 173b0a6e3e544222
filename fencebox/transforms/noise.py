"""Additive Gaussian noise and coarse dropout (cutout): two of FenceBox's random augmentations.

Both are exact on the gradient path: the surrogate adds the very same noise (or multiplies by the very
same mask) as :meth:`apply`, so an adaptive attacker sees the true function, not an approximation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from fencebox.transforms.base import Param, Params, Shape, Transform, per_image

if TYPE_CHECKING:
    import torch


def draw_seeds(rng: np.random.Generator, n: int) -> np.ndarray:
    """One independent 63-bit seed per image: cheap to sample for big batches, and sliceable per image."""
    return rng.integers(0, 2**63 - 1, size=n, dtype=np.int64)


def as_list(value: Any) -> Any:
    """A tuple default (immutable, safe to share) stored as the list a spec round-trip produces."""
    return list(value) if isinstance(value, tuple) else value


class GaussianNoise(Transform):
    """Add zero-mean Gaussian noise of standard deviation ``sigma`` grey levels (on the 0-255 scale).

    ``sigma`` is in grey levels of the uint8 image (sigma=8 is 8/255 ~ 0.031 on the [0, 1] scale);
    a range ``[lo, hi]`` draws one sigma per image.  The default [4, 8] is close to albumentations 1.x's
    GaussNoise default (variance 10 to 50, so std 3.2 to 7.1 grey levels).  The noise is i.i.d. per
    pixel and channel, drawn from a per-image seed in :meth:`apply` (torch's generator), so
    :meth:`sample` stays cheap (two numbers per image).  The result is rounded and clipped to [0, 255].
    The surrogate adds the same noise and clips (exact up to the final rounding).
    """

    name = "gaussian_noise"
    params = (
        Param(
            "sigma",
            "float",
            default=(4.0, 8.0),
            low=0.0,
            high=255.0,
            allow_range=True,
            doc="noise standard deviation in grey levels (0-255 scale), or a per-image range",
        ),
    )
    randomized = True
    surrogate_kind = "exact"

    def __init__(self, sigma: float | Sequence[float] = (4.0, 8.0)) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(sigma=sigma)

    def _check(self) -> None:
        self._config["sigma"] = as_list(self._config["sigma"])

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        n = shape[0]
        return {"seed": draw_seeds(rng, n), "sigma": per_image(self.config["sigma"], rng, n)}

    def noise(self, params: Params, shape: Shape) -> torch.Tensor:
        """The float32 (N, H, W, C) CPU tensor of noise in grey levels that ``params`` stand for.

        Drawn with torch's generator (4x faster than NumPy's normal sampler), seeded per image.
        """
        import torch

        n, h, w, c = shape
        out = torch.empty((n, h, w, c), dtype=torch.float32)
        for i, (seed, sigma) in enumerate(zip(params["seed"], params["sigma"], strict=True)):
            out[i].normal_(0.0, float(sigma), generator=torch.Generator().manual_seed(int(seed)))
        return out

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        noisy = self.noise(params, images.shape).numpy()
        noisy += images
        np.rint(noisy, out=noisy)
        np.clip(noisy, 0, 255, out=noisy)
        return noisy.astype(np.uint8)

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        n, c, h, w = x.shape
        noise = self.noise(params, (n, h, w, c)).permute(0, 3, 1, 2)
        return (x + noise.to(device=x.device, dtype=x.dtype) / 255.0).clamp(0.0, 1.0)


class CoarseDropout(Transform):
    """Set a few random rectangles to a constant fill value (cutout; albumentations' CoarseDropout).

    Per image, ``holes`` rectangles (an int or a per-image range) of height ``hole_height`` x H and
    width ``hole_width`` x W (fractions of the image side, each a constant or a per-image-and-hole
    range; at least one pixel) are placed uniformly inside the image and filled with ``fill``.  The
    defaults are albumentations 2.x's.  The surrogate multiplies by the same mask (exact).
    """

    name = "coarse_dropout"
    params = (
        Param("holes", "int", default=(1, 2), low=0, high=64, allow_range=True, doc="rectangles per image"),
        Param(
            "hole_height",
            "float",
            default=(0.1, 0.2),
            low=0.0,
            high=1.0,
            allow_range=True,
            doc="rectangle height as a fraction of the image height",
        ),
        Param(
            "hole_width",
            "float",
            default=(0.1, 0.2),
            low=0.0,
            high=1.0,
            allow_range=True,
            doc="rectangle width as a fraction of the image width",
        ),
        Param("fill", "int", default=0, low=0, high=255, doc="grey level the rectangles are set to"),
    )
    randomized = True
    surrogate_kind = "exact"

    def __init__(
        self,
        holes: int | Sequence[int] = (1, 2),
        hole_height: float | Sequence[float] = (0.1, 0.2),
        hole_width: float | Sequence[float] = (0.1, 0.2),
        fill: int = 0,
    ) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(holes=holes, hole_height=hole_height, hole_width=hole_width, fill=fill)

    def _check(self) -> None:
        for key in ("holes", "hole_height", "hole_width"):
            self._config[key] = as_list(self._config[key])
            setattr(self, key, self.config[key])

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        n, h, w, _ = shape
        count = per_image(self.config["holes"], rng, n, integer=True)
        k = max(1, int(count.max()))
        size = []
        for frac, side in ((self.config["hole_height"], h), (self.config["hole_width"], w)):
            f = per_image(frac, rng, n * k).reshape(n, k)
            size.append(np.clip(np.rint(f * side), 1, side).astype(np.int64))
        hh, ww = size
        top = np.floor(rng.random((n, k)) * (h - hh + 1)).astype(np.int64)
        left = np.floor(rng.random((n, k)) * (w - ww + 1)).astype(np.int64)
        used = np.arange(k)[None, :] < count[:, None]
        # An unused slot is an empty rectangle, so every image's params have the same shape.
        return {"top": top, "left": left, "height": np.where(used, hh, 0), "width": np.where(used, ww, 0)}

    @staticmethod
    def mask(params: Params, h: int, w: int) -> np.ndarray:
        """Boolean (N, H, W): True inside any of the image's rectangles."""
        rows = np.arange(h)[None, None, :]
        cols = np.arange(w)[None, None, :]
        top, left = params["top"][..., None], params["left"][..., None]
        in_rows = (rows >= top) & (rows < top + params["height"][..., None])  # (N, K, H)
        in_cols = (cols >= left) & (cols < left + params["width"][..., None])  # (N, K, W)
        hits = np.matmul(in_rows.transpose(0, 2, 1).astype(np.float32), in_cols.astype(np.float32))
        return hits > 0.5

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        m = self.mask(params, images.shape[1], images.shape[2])
        out = images.copy()
        out[m] = np.uint8(self.config["fill"])
        return out

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        import torch

        m = torch.from_numpy(self.mask(params, x.shape[2], x.shape[3])).to(device=x.device, dtype=x.dtype)
        m = m[:, None]
        return x * (1.0 - m) + m * (float(self.config["fill"]) / 255.0)
