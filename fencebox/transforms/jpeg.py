"""JPEG compression (Dziugaite et al. 2016; Das et al. 2017; Guo et al. 2018): a real libjpeg round trip."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from fencebox.errors import InputError
from fencebox.registry import register
from fencebox.transforms._dct import SUBSAMPLING_FACTORS, diff_jpeg
from fencebox.transforms.base import Param, Params, Shape, Transform, per_image

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
    h, w, c = image.shape
    if max(h, w) > MAX_SIDE:
        raise InputError(f"jpeg: images must be at most {MAX_SIDE} pixels on a side, got {h}x{w}")
    if c == 1:
        src = image[:, :, 0]
        flags = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
        mode = cv2.IMREAD_GRAYSCALE
    else:
        src = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        flags = [
            cv2.IMWRITE_JPEG_QUALITY,
            int(quality),
            cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
            _CV_SAMPLING[subsampling],
        ]
        mode = cv2.IMREAD_COLOR_RGB
    ok, buf = cv2.imencode(".jpg", src, flags)
    if not ok:  # pragma: no cover - libjpeg accepts every uint8 image within MAX_SIDE
        raise InputError(f"jpeg: OpenCV could not encode a {h}x{w}x{c} image")
    out = cv2.imdecode(buf, mode)
    if out is None:  # pragma: no cover - libjpeg decodes what it just encoded
        raise InputError(f"jpeg: OpenCV could not decode its own {h}x{w}x{c} encoding")
    return out.reshape(h, w, c)


@register
class Jpeg(Transform):
    """JPEG encode + decode in memory (libjpeg-turbo via OpenCV); quality fixed or drawn per image."""

    name = "jpeg"
    params = (
        Param(
            "quality",
            "int",
            default=75,
            low=1,
            high=100,
            allow_range=True,
            doc="JPEG quality (libjpeg scale); a range [lo, hi] draws one per image",
        ),
        Param(
            "subsampling",
            "str",
            default="4:2:0",
            choices=tuple(SUBSAMPLING_FACTORS),
            doc="chroma subsampling of colour images",
        ),
    )
    surrogate_kind = "approximate"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.randomized = isinstance(self.config["quality"], list)

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Draw one quality per image (constant when ``quality`` is a single value)."""
        return {"quality": per_image(self.config["quality"], rng, shape[0], integer=True)}

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Round-trip each image through the real codec at its quality."""
        sub = str(self.config["subsampling"])
        out = np.empty_like(images)
        for i, q in enumerate(params["quality"]):
            out[i] = jpeg_roundtrip(images[i], int(q), sub)
        return out

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Differentiable JPEG approximation (straight-through rounding) at the same per-image quality."""
        return diff_jpeg(x, params["quality"], str(self.config["subsampling"]), rounding="ste")
