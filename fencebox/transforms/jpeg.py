"""JPEG compression (Dziugaite et al. 2016; Das et al. 2017; Guo et al. 2018): a real libjpeg round trip."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from fencebox.registry import register
from fencebox.transforms._codec import QualityCodec, codec_roundtrip, quality_param
from fencebox.transforms._dct import SUBSAMPLING_FACTORS, SURROGATE_ROUNDING, diff_jpeg
from fencebox.transforms.base import Param, Params

if TYPE_CHECKING:
    import torch

_CV_SAMPLING = {
    "4:4:4": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
    "4:2:2": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422,
    "4:2:0": cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420,
}
MAX_SIDE = 65500
"""The largest height or width a baseline JPEG can hold (libjpeg's JPEG_MAX_DIMENSION)."""


def jpeg_roundtrip(image: np.ndarray, quality: int, subsampling: str = "4:2:0") -> np.ndarray:
    """Encode one uint8 (H, W, C) image as JPEG in memory with OpenCV (libjpeg-turbo) and decode it back.

    C = 1 makes a grayscale JPEG; C = 3 is RGB with the given chroma subsampling.  OpenCV releases the
    GIL in both calls, so a thread pool runs images in parallel.
    """
    flags = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    if image.shape[2] == 3:
        flags += [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, _CV_SAMPLING[subsampling]]
    return codec_roundtrip(image, "jpeg", ".jpg", flags, MAX_SIDE)


SUBSAMPLING = Param(
    "subsampling",
    "str",
    default="4:2:0",
    choices=tuple(SUBSAMPLING_FACTORS),
    doc="chroma subsampling of colour images",
)
"""The chroma subsampling parameter of every transform that runs libjpeg (jpeg, shield)."""


@register
class Jpeg(QualityCodec):
    """JPEG encode + decode in memory (libjpeg-turbo via OpenCV); quality fixed or drawn per image."""

    name = "jpeg"
    params = (
        quality_param("JPEG quality (libjpeg scale); a range [lo, hi] draws one per image"),
        SUBSAMPLING,
    )
    surrogate_kind = "approximate"

    def roundtrip(self, image: np.ndarray, quality: int) -> np.ndarray:
        """One libjpeg round trip at ``quality`` with the configured chroma subsampling."""
        return jpeg_roundtrip(image, quality, str(self.config["subsampling"]))

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Differentiable JPEG (exact rounding forward, cubic gradient) at the same per-image quality."""
        return diff_jpeg(x, params["quality"], str(self.config["subsampling"]), rounding=SURROGATE_ROUNDING)
