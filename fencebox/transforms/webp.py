"""Lossy WebP compression: a real libwebp (VP8 intra) round trip, the JPEG defence with a newer codec."""

from __future__ import annotations

import cv2
import numpy as np

from fencebox.errors import InputError
from fencebox.registry import register
from fencebox.transforms.base import Param, Params, Shape, Transform, per_image

MAX_SIDE = 16383
"""The largest height or width a WebP image can hold (WEBP_MAX_DIMENSION)."""


def webp_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """Encode one uint8 (H, W, C) image as lossy WebP in memory with OpenCV (libwebp) and decode it back.

    WebP has no grayscale mode: a C = 1 image is encoded as gray RGB and decoded back to one channel.
    OpenCV releases the GIL in both calls.
    """
    h, w, c = image.shape
    if max(h, w) > MAX_SIDE:
        raise InputError(f"webp: images must be at most {MAX_SIDE} pixels on a side, got {h}x{w}")
    if c == 1:
        src = image[:, :, 0]
        mode = cv2.IMREAD_GRAYSCALE
    else:
        src = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        mode = cv2.IMREAD_COLOR_RGB
    ok, buf = cv2.imencode(".webp", src, [cv2.IMWRITE_WEBP_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - libwebp accepts every uint8 image within MAX_SIDE
        raise InputError(f"webp: OpenCV could not encode a {h}x{w}x{c} image")
    out = cv2.imdecode(buf, mode)
    if out is None:  # pragma: no cover - libwebp decodes what it just encoded
        raise InputError(f"webp: OpenCV could not decode its own {h}x{w}x{c} encoding")
    return out.reshape(h, w, c)


@register
class Webp(Transform):
    """Lossy WebP encode + decode in memory (libwebp via OpenCV); quality fixed or drawn per image."""

    name = "webp"
    params = (
        Param(
            "quality",
            "int",
            default=75,
            low=1,
            high=100,
            allow_range=True,
            doc="WebP quality (libwebp scale); a range [lo, hi] draws one per image",
        ),
    )
    # VP8 intra coding (block prediction, 4x4 integer transform, adaptive segment quantisers, loop filter)
    # has no honest cheap differentiable twin: the surrogate is the identity (BPDA).
    surrogate_kind = "identity"

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.randomized = isinstance(self.config["quality"], list)

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Draw one quality per image (constant when ``quality`` is a single value)."""
        return {"quality": per_image(self.config["quality"], rng, shape[0], integer=True)}

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Round-trip each image through the real codec at its quality."""
        out = np.empty_like(images)
        for i, q in enumerate(params["quality"]):
            out[i] = webp_roundtrip(images[i], int(q))
        return out
