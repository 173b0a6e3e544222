"""Feature Distillation (Liu et al., CVPR 2019): JPEG-style DCT quantisation with a DNN-oriented table.

Liu, Z., Liu, Q., Liu, T., Xu, N., Lin, X., Wang, Y., Wen, W. "Feature Distillation: DNN-Oriented JPEG
Compression Against Adversarial Examples", CVPR 2019 (arXiv:1803.05787).

The table: the authors' released code (github.com/zihaoliu123/Feature-Distillation-DNN-Oriented-JPEG-
Compression-Against-Adversarial-Examples, ``utils/feature_distillation.py``) quantises every 8x8 DCT block
with step 25 on the 4x4 lowest-frequency bands (the features the DNN relies on, kept finely) and step 30 on
the other 48 bands (where adversarial noise lives, quantised coarsely), with no quality scaling.  These are
the defaults here (``low_step``, ``high_step``, ``low_bands``).  Following the paper's JPEG framing, the
default applies the table to the Y, Cb and Cr planes at full resolution after JPEG's level shift by 128;
``colorspace="rgb"`` quantises the R, G, B planes instead, as the released code does.  There is no entropy
coding: it is lossless and cannot change pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fencebox.errors import SpecError
from fencebox.registry import register
from fencebox.transforms._dct import (
    BLOCK,
    SURROGATE_ROUNDING,
    clamp_ste,
    dct_quantise_np,
    dct_quantise_torch,
    rgb_to_ycbcr_np,
    rgb_to_ycbcr_torch,
    round_ste,
    snap,
    ycbcr_to_rgb_np,
    ycbcr_to_rgb_torch,
)
from fencebox.transforms.base import Param, Params, Transform

if TYPE_CHECKING:
    import torch


def distillation_table(low_step: float, high_step: float, low_bands: int) -> np.ndarray:
    """The 8x8 quantisation table: ``low_step`` on the top-left ``low_bands`` x ``low_bands`` bands, else high."""
    table = np.full((BLOCK, BLOCK), float(high_step))
    table[:low_bands, :low_bands] = float(low_step)
    return table


@register
class FeatureDistillation(Transform):
    """DNN-oriented JPEG quantisation (Liu et al. 2019): fine steps on low DCT bands, coarse on the rest."""

    name = "feature_distillation"
    params = (
        Param(
            "low_step", "float", default=25.0, low=1.0, high=255.0, doc="quantisation step of the low bands"
        ),
        Param(
            "high_step",
            "float",
            default=30.0,
            low=1.0,
            high=255.0,
            doc="quantisation step of the other bands",
        ),
        Param("low_bands", "int", default=4, low=0, high=8, doc="side of the top-left block of low bands"),
        Param(
            "colorspace", "str", default="ycbcr", choices=("ycbcr", "rgb"), doc="planes the table applies to"
        ),
    )
    surrogate_kind = "approximate"

    def _check(self) -> None:
        if float(self.config["low_step"]) > float(self.config["high_step"]):
            raise SpecError(
                f"{self.name}: parameter 'low_step' ({self.config['low_step']}) must not exceed "
                f"'high_step' ({self.config['high_step']}): the low bands are the ones kept finely"
            )
        self._table = distillation_table(
            self.config["low_step"], self.config["high_step"], self.config["low_bands"]
        )

    def _use_ycbcr(self, channels: int) -> bool:
        return channels == 3 and self.config["colorspace"] == "ycbcr"

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Quantise every 8x8 DCT block of every plane (one matrix product each way for the whole batch)."""
        ycc = self._use_ycbcr(images.shape[3])
        x = rgb_to_ycbcr_np(images) if ycc else images
        y = dct_quantise_np(x, self._table)
        if ycc:
            y = snap(ycbcr_to_rgb_np(y))
        np.rint(y, out=y)
        np.clip(y, 0, 255, out=y)
        return y.astype(np.uint8)

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """The same ops in torch: exact rounding forward with a cubic gradient (:data:`SURROGATE_ROUNDING`)."""
        import torch

        v = x * 255.0
        ycc = self._use_ycbcr(x.shape[1])
        if ycc:
            v = rgb_to_ycbcr_torch(v)
        table = torch.as_tensor(self._table, dtype=x.dtype, device=x.device)
        y = dct_quantise_torch(v, table, rounding=SURROGATE_ROUNDING)
        if ycc:
            y = ycbcr_to_rgb_torch(y)
        return clamp_ste(round_ste(y), 0.0, 255.0) / 255.0
