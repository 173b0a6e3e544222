"""Lossy WebP compression: a real libwebp (VP8 intra) round trip, the JPEG defence with a newer codec."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from fencebox.transforms._codec import QualityCodec, codec_roundtrip, quality_param

MAX_SIDE = 16383
"""The largest height or width a WebP image can hold (WEBP_MAX_DIMENSION)."""


def webp_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode one uint8 (H, W, C) image as lossy WebP in memory with OpenCV (libwebp) and decode it back.

    WebP has no grayscale mode: a C = 1 image is encoded as gray RGB and decoded back to one channel.
    OpenCV releases the GIL in both calls.
    """
    return codec_roundtrip(image, "webp", ".webp", [cv2.IMWRITE_WEBP_QUALITY, int(quality)], MAX_SIDE)


class Webp(QualityCodec):
    """Lossy WebP encode + decode in memory (libwebp via OpenCV); quality fixed or drawn per image."""

    name = "webp"
    params = (quality_param("WebP quality (libwebp scale); a range [lo, hi] draws one per image"),)
    # VP8 intra coding (block prediction, 4x4 integer transform, adaptive segment quantisers, loop filter)
    # has no honest cheap differentiable twin: the surrogate is the identity (BPDA).
    surrogate_kind = "identity"

    def __init__(self, quality: int | Sequence[int] = 75) -> None:
        """See the class docstring and :attr:`params` for each parameter's meaning and range."""
        super().__init__(quality=quality)

    def roundtrip(self, image: np.ndarray, quality: int) -> np.ndarray:
        """One libwebp round trip at ``quality``."""
        return webp_roundtrip(image, quality)
