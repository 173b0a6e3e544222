"""Bit-depth reduction (Feature Squeezing, Xu et al. 2018; FenceBox's BdR)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from fencebox.transforms.base import Param, Params, Transform

if TYPE_CHECKING:
    import torch


class BitDepth(Transform):
    """Reduce each pixel to 2^bits levels: round (Feature Squeezing) or truncate (FenceBox's BdR)."""

    name = "bit_depth"
    params = (
        Param("bits", "int", default=5, low=1, high=8, doc="bits kept per channel"),
        Param(
            "mode", "str", default="round", choices=("round", "truncate"), doc="round or keep the top bits"
        ),
    )
    surrogate_kind = "identity"

    def __init__(self, bits: int = 5, mode: str = "round") -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(bits=bits, mode=mode)
        self._lut = self._table()

    def _table(self) -> np.ndarray:
        v = np.arange(256, dtype=np.float64)
        bits = int(self.config["bits"])
        if self.config["mode"] == "truncate":
            return (v.astype(np.uint8) & np.uint8((0xFF << (8 - bits)) & 0xFF)).astype(np.uint8)
        levels = 2**bits - 1
        squeezed = np.round(v / 255.0 * levels) / levels
        return np.clip(np.round(squeezed * 255.0), 0, 255).astype(np.uint8)

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        n, h, w, c = images.shape
        flat = np.ascontiguousarray(images).reshape(n * h, w * c)
        # cv2.LUT is ~8x faster than NumPy fancy indexing and releases the GIL.
        return cv2.LUT(flat, self._lut).reshape(images.shape)

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        # Quantisation has zero gradient almost everywhere: BPDA passes the gradient straight through,
        # while the forward value stays the exact quantised one.
        import torch

        levels = 2 ** int(self.config["bits"]) - 1
        if self.config["mode"] == "truncate":
            step = 2 ** (8 - int(self.config["bits"]))
            q = torch.floor(x * 255.0 / step) * step / 255.0
        else:
            q = torch.round(x * levels) / levels
        return x + (q - x).detach()
