"""Rigid geometric transforms: random affine (FenceBox's PRO-TAT), random crop-and-rescale
(Guo et al. 2018) and horizontal flip.

Each ``apply`` runs OpenCV's specialised kernel and each ``surrogate`` samples the same positions with
the same bilinear convention (see ``_warp``): affine is ``cv2.warpAffine`` against ``grid_sample`` on
the grid of the same matrix, crop is slicing + ``cv2.resize`` against slicing + ``interpolate``, and
flip is an exact permutation of pixels (``cv2.flip``, ``torch.flip``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from fencebox.errors import InputError, SpecError
from fencebox.registry import register
from fencebox.transforms._warp import (
    Border,
    Grid,
    WarpTransform,
    affine_positions,
    fold_reflect,
    interpolate_linear,
    resize_linear,
)
from fencebox.transforms.base import Param, Params, Shape, Transform, batch_size, check_batch, per_image

if TYPE_CHECKING:
    import torch


def _draw(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    """Uniform per-image values in ``[lo, hi]`` (a constant when lo == hi, consuming no randomness)."""
    return per_image([lo, hi], rng, n) if lo < hi else per_image(float(lo), rng, n)


@register
class Affine(WarpTransform):
    """Random shift, scale and rotation about the image centre (FenceBox's PRO-TAT), bilinear.

    Per image: rotation in ``[-max_rotate, max_rotate]`` degrees, zoom in ``[min_scale, max_scale]``,
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
        Param("min_scale", "float", default=0.9, low=0.05, high=10.0, doc="smallest zoom factor"),
        Param("max_scale", "float", default=1.1, low=0.05, high=10.0, doc="largest zoom factor"),
        Param("max_rotate", "float", default=15.0, low=0.0, high=180.0, doc="largest rotation, in degrees"),
        Param(
            "border", "str", default="reflect", choices=("reflect", "constant"), doc="fill: mirror or black"
        ),
    )

    def _check(self) -> None:
        lo, hi = self.config["min_scale"], self.config["max_scale"]
        if lo > hi:
            raise SpecError(f"affine: parameter 'min_scale' ({lo}) must not exceed 'max_scale' ({hi})")

    def fill_mode(self) -> Border:
        """Reflection is folded into the grid (then edge-clipped); constant means zeros outside."""
        return "replicate" if self.config["border"] == "reflect" else "constant"

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Per image: angle (degrees), scale, and shift (tx, ty) as fractions of (width, height)."""
        n = shape[0]
        r, s = self.config["max_rotate"], self.config["max_shift"]
        return {
            "angle": _draw(rng, -r, r, n),
            "scale": _draw(rng, self.config["min_scale"], self.config["max_scale"], n),
            "shift": rng.uniform(-s, s, size=(n, 2)) if s > 0 else np.zeros((n, 2)),
        }

    def matrix(self, params: Params, i: int, in_hw: tuple[int, int]) -> np.ndarray:
        """The 2x3 inverse map of image ``i``: source = M @ (x, y, 1) for every output pixel (x, y).

        Rotation by ``-angle``, zoom by ``1 / scale`` and the shift undone, about the image centre
        (pixel centres at integers): ``src = c + R(-theta) (dst - c - t) / scale``.
        """
        h, w = in_hw
        theta = np.deg2rad(float(params["angle"][i]))
        scale = float(params["scale"][i])
        tx, ty = float(params["shift"][i, 0]) * w, float(params["shift"][i, 1]) * h
        cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
        cos, sin = np.cos(theta) / scale, np.sin(theta) / scale
        ox, oy = cx + tx, cy + ty
        return np.array([[cos, sin, cx - cos * ox - sin * oy], [-sin, cos, cy + sin * ox - cos * oy]])

    def grid(self, params: Params, i: int, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Grid:
        """Where ``cv2.warpAffine`` samples each output pixel under :meth:`matrix` (see
        :func:`~fencebox.transforms._warp.affine_positions`), folded for ``border="reflect"``: folding
        the positions is the same as sampling the image extended by reflection about its outer pixel
        edges (``BORDER_REFLECT``, ``fedcba|abcdef``).
        """
        (h, w) = in_hw
        map_x, map_y = affine_positions(self.matrix(params, i, in_hw), out_hw)
        if self.config["border"] == "reflect":
            return fold_reflect(map_x, w), fold_reflect(map_y, h)
        return map_x.astype(np.float32), map_y.astype(np.float32)

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """``cv2.warpAffine`` (bilinear, inverse map) of each image, mirrored or black outside."""
        check_batch(images, self.min_size, self.name)
        in_hw, (oh, ow) = self._shapes(images.shape, params)
        n, c = images.shape[0], images.shape[3]
        out = np.empty((n, oh, ow, c), dtype=np.uint8)
        border = cv2.BORDER_REFLECT if self.config["border"] == "reflect" else cv2.BORDER_CONSTANT
        for i in range(n):
            res = cv2.warpAffine(
                images[i],
                self.matrix(params, i, in_hw),
                (ow, oh),
                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                borderMode=border,
                borderValue=0,
            )
            out[i] = res.reshape(oh, ow, c)
        return out


@register
class RandomCrop(WarpTransform):
    """Crop a random region (side fraction in [min_scale, max_scale]) and rescale it to the input size.

    Guo et al. 2018's crop-and-rescale.  The crop box is in whole pixels at a random position; the
    rescale is bilinear with half-pixel centres, clamped at the crop's edges (``cv2.resize`` of the crop).
    """

    name = "random_crop"
    randomized = True
    min_size = 2
    params = (
        Param("min_scale", "float", default=0.8, low=0.01, high=1.0, doc="smallest crop side, as a fraction"),
        Param("max_scale", "float", default=1.0, low=0.01, high=1.0, doc="largest crop side, as a fraction"),
    )

    def _check(self) -> None:
        lo, hi = self.config["min_scale"], self.config["max_scale"]
        if lo > hi:
            raise SpecError(f"random_crop: parameter 'min_scale' ({lo}) must not exceed 'max_scale' ({hi})")

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Per image: the side fraction, and the position as fractions of the free room."""
        n = shape[0]
        return {
            "scale": _draw(rng, self.config["min_scale"], self.config["max_scale"], n),
            "offset": rng.random((n, 2)),
        }

    def box(self, params: Params, i: int, in_hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """The crop of image ``i`` in whole pixels: (top, left, height, width)."""
        h, w = in_hw
        s = float(params["scale"][i])
        ch, cw = min(h, max(1, round(s * h))), min(w, max(1, round(s * w)))
        fy, fx = (float(v) for v in params["offset"][i])
        top = min(int(fy * (h - ch + 1)), h - ch)
        left = min(int(fx * (w - cw + 1)), w - cw)
        return top, left, ch, cw

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Slice each image's crop and ``cv2.resize`` it (bilinear) back to the input size."""
        check_batch(images, self.min_size, self.name)
        in_hw, (oh, ow) = self._shapes(images.shape, params)
        out = np.empty((images.shape[0], oh, ow, images.shape[3]), dtype=np.uint8)
        for i in range(images.shape[0]):
            top, left, ch, cw = self.box(params, i, in_hw)
            out[i] = resize_linear(images[i, top : top + ch, left : left + cw], oh, ow)
        return out

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The same crops, resized by ``interpolate`` (bilinear, the same positions)."""
        import torch

        n, c, h, w = self._check_nchw(x)
        in_hw, (oh, ow) = self._shapes((n, h, w, c), params)
        out = []
        for i in range(n):
            top, left, ch, cw = self.box(params, i, in_hw)
            out.append(interpolate_linear(x[i : i + 1, :, top : top + ch, left : left + cw], oh, ow))
        return torch.cat(out)


@register
class Flip(Transform):
    """Mirror each image left-right with probability p."""

    name = "flip"
    randomized = True
    surrogate_kind = "exact"
    params = (Param("p", "float", default=0.5, low=0.0, high=1.0, doc="probability of flipping an image"),)

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Per image: whether to flip it."""
        return {"flip": rng.random(shape[0]) < self.config["p"]}

    def _mask(self, params: Params, n: int) -> np.ndarray:
        mask = np.asarray(params["flip"], dtype=bool)
        if batch_size(params) != n:
            raise InputError(f"flip: params were sampled for {mask.shape[0]} images, but the batch has {n}")
        return mask

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Reverse the width axis of the selected images (``cv2.flip``), copy the others."""
        check_batch(images, self.min_size, self.name)
        mask = self._mask(params, images.shape[0])
        if not mask.any():
            return images.copy()
        out = np.empty_like(images)
        for i, flip in enumerate(mask):
            if flip:
                out[i] = cv2.flip(images[i], 1).reshape(images.shape[1:])
            else:
                out[i] = images[i]
        return out

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The same permutation in torch (exact, gradient flows through)."""
        import torch

        mask = torch.as_tensor(self._mask(params, int(x.shape[0])), device=x.device).view(-1, 1, 1, 1)
        return torch.where(mask, x.flip(-1), x)
