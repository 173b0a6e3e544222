"""Rigid geometric transforms: random affine (FenceBox's PRO-TAT), random crop-and-rescale
(Guo et al. 2018) and horizontal flip.

Affine and crop resample through one NumPy grid shared by ``apply`` (cv2.remap) and ``surrogate``
(grid_sample), see ``_warp``; flip is an exact permutation of pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from fencebox.errors import InputError
from fencebox.transforms._warp import (
    OUTSIDE,
    Border,
    Grid,
    WarpTransform,
    fold_reflect,
    resize_axis,
    separable_grid,
    snap,
)
from fencebox.transforms.base import (
    Param,
    Params,
    Shape,
    Transform,
    batch_size,
    bounds,
    check_batch,
    min_max_spelling,
    per_image,
)

if TYPE_CHECKING:
    import torch


def _draw(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """Uniform per-image values in ``[lo, hi]`` (a constant when lo == hi, consuming no randomness)."""
    return per_image([lo, hi], rng, n) if lo < hi else per_image(float(lo), rng, n)


class Affine(WarpTransform):
    """Random shift, scale and rotation about the image centre (FenceBox's PRO-TAT), bilinear.

    Per image: rotation in ``[-max_rotate, max_rotate]`` degrees, zoom in ``scale`` = ``[lo, hi]``,
    shift in ``[-max_shift, max_shift]`` of the width and of the height.  Uncovered areas are filled
    by mirroring the image (``border="reflect"``, the default: no black corners for a classifier to
    notice) or with black (``border="constant"``).
    """

    name = "affine"
    randomized = True
    min_size = 2
    params = (
        Param(
            "max_shift",
            "float",
            default=0.1,
            low=0.0,
            high=1.0,
            doc="largest shift, as a fraction of the side",
        ),
        Param(
            "scale",
            "float",
            default=[0.9, 1.1],
            low=0.05,
            high=10.0,
            allow_range=True,
            doc="zoom factor, or a per-image range [lo, hi]",
        ),
        Param("max_rotate", "float", default=15.0, low=0.0, high=180.0, doc="largest rotation, in degrees"),
        Param(
            "border", "str", default="reflect", choices=("reflect", "constant"), doc="fill: mirror or black"
        ),
    )

    renamed = min_max_spelling("scale")

    def __init__(
        self,
        max_shift: float = 0.1,
        scale: float | Sequence[float] = (0.9, 1.1),
        max_rotate: float = 15.0,
        border: str = "reflect",
    ) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(max_shift=max_shift, scale=scale, max_rotate=max_rotate, border=border)

    def fill_mode(self) -> Border:
        """Reflection is folded into the grid (then edge-clipped); constant means zeros outside."""
        return "replicate" if self.config["border"] == "reflect" else "constant"

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Per image: angle (degrees), scale, and shift (tx, ty) as fractions of (width, height)."""
        n = shape[0]
        r, s = self.config["max_rotate"], self.config["max_shift"]
        return {
            "angle": _draw(rng, -r, r, n),
            "scale": _draw(rng, *bounds(self.config["scale"]), n),
            "shift": rng.uniform(-s, s, size=(n, 2)) if s > 0 else np.zeros((n, 2)),
        }

    def grid(self, params: Params, i: int, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Grid:
        """Inverse rotation/zoom/shift about the centre, folded at the edges for ``border="reflect"``."""
        (h, w), (oh, ow) = in_hw, out_hw
        theta = np.deg2rad(float(params["angle"][i]))
        scale = float(params["scale"][i])
        tx, ty = float(params["shift"][i, 0]) * w, float(params["shift"][i, 1]) * h
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        # Inverse map: src = c + R(-theta) (dst - c - t) / scale, in float32 (snapped to 1/32 px anyway).
        dx = (np.arange(ow, dtype=np.float32) - np.float32(cx + tx))[None, :]
        dy = (np.arange(oh, dtype=np.float32) - np.float32(cy + ty))[:, None]
        cos, sin = np.float32(np.cos(theta) / scale), np.float32(np.sin(theta) / scale)
        map_x = (cos * dx + np.float32(cx)) + sin * dy
        map_y = (np.float32(cy) - sin * dx) + cos * dy
        if self.config["border"] == "reflect":
            map_x, map_y = fold_reflect(map_x, w), fold_reflect(map_y, h)
        else:
            # Keep far-away coordinates far away but finite and small (OpenCV 4.x converts them to int16).
            np.clip(map_x, OUTSIDE - w, w - OUTSIDE, out=map_x)
            np.clip(map_y, OUTSIDE - h, h - OUTSIDE, out=map_y)
        return snap(map_x), snap(map_y)


class RandomCrop(WarpTransform):
    """Crop a random region (side fraction in ``scale`` = [lo, hi]) and rescale it to the input size.

    Guo et al. 2018's crop-and-rescale.  The crop box is in whole pixels at a random position; the
    rescale is bilinear with half-pixel centres, clamped at the crop's edges (``cv2.resize`` of the crop).
    """

    name = "random_crop"
    randomized = True
    min_size = 2
    params = (
        Param(
            "scale",
            "float",
            default=[0.8, 1.0],
            low=0.01,
            high=1.0,
            allow_range=True,
            doc="crop side as a fraction of the image's, or a per-image range [lo, hi]",
        ),
    )
    renamed = min_max_spelling("scale")

    def __init__(self, scale: float | Sequence[float] = (0.8, 1.0)) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(scale=scale)

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Per image: the side fraction, and the position as fractions of the free room."""
        n = shape[0]
        return {
            "scale": _draw(rng, *bounds(self.config["scale"]), n),
            "offset": rng.random((n, 2)),
        }

    def grid(self, params: Params, i: int, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Grid:
        """Half-pixel rescale of the crop box to the full size, clamped at the box edges."""
        h, w = in_hw
        s = float(params["scale"][i])
        ch, cw = min(h, max(1, round(s * h))), min(w, max(1, round(s * w)))
        fy, fx = (float(v) for v in params["offset"][i])
        top = min(int(fy * (h - ch + 1)), h - ch)
        left = min(int(fx * (w - cw + 1)), w - cw)
        return separable_grid(resize_axis(w, 0, left, cw, w), resize_axis(h, 0, top, ch, h))


class Flip(Transform):
    """Mirror each image left-right with probability p."""

    name = "flip"
    randomized = True
    surrogate_kind = "exact"
    params = (Param("p", "float", default=0.5, low=0.0, high=1.0, doc="probability of flipping an image"),)

    def __init__(self, p: float = 0.5) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(p=p)

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Per image: whether to flip it."""
        return {"flip": rng.random(shape[0]) < self.config["p"]}

    def _mask(self, params: Params, n: int) -> np.ndarray:
        mask = np.asarray(params["flip"], dtype=bool)
        if batch_size(params) != n:
            raise InputError(f"flip: params were sampled for {mask.shape[0]} images, but the batch has {n}")
        return mask

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Reverse the width axis of the selected images."""
        check_batch(images, self.min_size, self.name)
        mask = self._mask(params, images.shape[0])
        out = images.copy()
        for i in np.flatnonzero(mask):
            out[i] = images[i, :, ::-1]
        return out

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The same permutation in torch (exact, gradient flows through)."""
        import torch

        mask = torch.as_tensor(self._mask(params, int(x.shape[0])), device=x.device).view(-1, 1, 1, 1)
        return torch.where(mask, x.flip(-1), x)
