"""Randomized resize-and-pad (Xie et al. 2018, "Mitigating Adversarial Effects Through Randomization";
FenceBox's RAND).

Per image: draw a scale ``s`` in ``[min_scale, max_scale]``, resize the image bilinearly to
``round(s * H) x round(s * W)`` (the same factor on both axes), and place it at a random offset on a
black canvas of ``out_size``.  ``apply`` is ``cv2.resize`` (INTER_LINEAR) written into a zero canvas;
``surrogate`` is ``interpolate`` (bilinear, half-pixel centres) padded with zeros at the same box, so
the surrogate is exact up to the uint8 rounding (see ``_warp``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fencebox.errors import InputError, SpecError
from fencebox.registry import register
from fencebox.transforms._warp import WarpTransform, interpolate_linear, resize_linear
from fencebox.transforms.base import Param, Params, Shape, check_batch, per_image

if TYPE_CHECKING:
    import torch


Box = tuple[int, int, int, int]
"""(top, left, height, width) of a rectangle in pixels."""


def scaled_size(scale: float, size: int) -> int:
    """The resized side for ``scale`` (rounded, at least 1 pixel)."""
    return max(1, round(scale * size))


@register
class ResizePad(WarpTransform):
    """Resize by a random factor, then zero-pad at a random offset to a fixed size (Xie et al. 2018)."""

    name = "resize_pad"
    randomized = True
    min_size = 2
    params = (
        Param("min_scale", "float", default=0.9, low=0.05, high=8.0, doc="smallest resize factor"),
        Param("max_scale", "float", default=1.0, low=0.05, high=8.0, doc="largest resize factor"),
        Param(
            "out_size",
            "int",
            default=None,
            low=1,
            high=16384,
            nullable=True,
            doc="side of the square output; null keeps the input's height and width",
        ),
    )

    def _check(self) -> None:
        lo, hi, out = self.config["min_scale"], self.config["max_scale"], self.config["out_size"]
        if lo > hi:
            raise SpecError(f"resize_pad: parameter 'min_scale' ({lo}) must not exceed 'max_scale' ({hi})")
        if out is None and hi > 1.0:
            raise SpecError(
                f"resize_pad: parameter 'max_scale' must be <= 1 when out_size is null (the resized image "
                f"must fit in the input's size), got {hi}; set out_size to pad to a larger canvas"
            )

    def output_shape(self, shape: Shape) -> Shape:
        """``out_size`` x ``out_size`` when set, else the input's height and width."""
        out = self.config["out_size"]
        if out is None:
            return shape
        return (shape[0], int(out), int(out), shape[3])

    def _check_fits(self, shape: Shape) -> None:
        _, h, w, _ = shape
        _, oh, ow, _ = self.output_shape(shape)
        hi = self.config["max_scale"]
        sh, sw = scaled_size(hi, h), scaled_size(hi, w)
        if sh > oh or sw > ow:
            raise InputError(
                f"resize_pad: a {h}x{w} image resized by max_scale={hi} is {sh}x{sw}, which does not fit "
                f"in the {oh}x{ow} output; use a larger out_size or a smaller max_scale"
            )

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Per image: the scale, and the offset as fractions of the free room (shape-independent)."""
        self._check_fits(shape)
        n = shape[0]
        lo, hi = self.config["min_scale"], self.config["max_scale"]
        scale = per_image([lo, hi], rng, n) if lo < hi else per_image(lo, rng, n)
        return {"scale": scale, "offset": rng.random((n, 2))}

    def box(self, params: Params, i: int, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Box:
        """Where image ``i`` goes on the canvas: (top, left, height, width) of its resized copy."""
        (h, w), (oh, ow) = in_hw, out_hw
        s = float(params["scale"][i])
        sh, sw = scaled_size(s, h), scaled_size(s, w)
        if sh > oh or sw > ow:
            raise InputError(f"resize_pad: a {h}x{w} image resized by {s:.4g} does not fit in {oh}x{ow}")
        fy, fx = (float(v) for v in params["offset"][i])
        top = min(int(fy * (oh - sh + 1)), oh - sh)
        left = min(int(fx * (ow - sw + 1)), ow - sw)
        return top, left, sh, sw

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """``cv2.resize`` (bilinear) of each image into its box on a zero canvas."""
        check_batch(images, self.min_size, self.name)
        in_hw, out_hw = self._shapes(images.shape, params)
        n, c = images.shape[0], images.shape[3]
        out = np.zeros((n, *out_hw, c), dtype=np.uint8)
        for i in range(n):
            top, left, sh, sw = self.box(params, i, in_hw, out_hw)
            out[i, top : top + sh, left : left + sw] = resize_linear(images[i], sh, sw)
        return out

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """``interpolate`` (bilinear, the same positions) of each image, zero-padded around its box."""
        import torch
        import torch.nn.functional as F

        n, c, h, w = (int(s) for s in self._check_nchw(x))
        in_hw, (oh, ow) = self._shapes((n, h, w, c), params)
        out = []
        for i in range(n):
            top, left, sh, sw = self.box(params, i, in_hw, (oh, ow))
            small = interpolate_linear(x[i : i + 1], sh, sw)
            out.append(F.pad(small, (left, ow - left - sw, top, oh - top - sh)))
        return torch.cat(out)
