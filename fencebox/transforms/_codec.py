"""Shared plumbing of the codec round-trip transforms (``jpeg``, ``webp``).

One image goes through a real codec in memory with OpenCV (which releases the GIL in both calls, so a
thread pool runs images in parallel), and :class:`QualityCodec` holds what the transforms share: a
``quality`` parameter that is fixed or drawn per image, and one round trip per image.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from fencebox.errors import InputError
from fencebox.transforms.base import Param, Params, Shape, Transform, per_image

_IMREAD_RGB: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)
"""OpenCV >= 4.11 decodes colour straight to RGB; older releases decode BGR and we swap the channels."""


def codec_roundtrip(image: np.ndarray, owner: str, ext: str, flags: list[int], max_side: int) -> np.ndarray:
    """Encode one uint8 (H, W, C) image as ``ext`` with OpenCV ``flags`` in memory and decode it back.

    C = 1 is encoded from its single channel and decoded as grayscale; C = 3 (RGB) is handed to OpenCV as
    BGR and decoded straight back to RGB.  Sides above ``max_side`` (the format's limit) are refused.
    """
    h, w, c = image.shape
    if max(h, w) > max_side:
        raise InputError(f"{owner}: images must be at most {max_side} pixels on a side, got {h}x{w}")
    if c == 1:
        src, mode = image[:, :, 0], cv2.IMREAD_GRAYSCALE
    else:
        src = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        mode = cv2.IMREAD_COLOR if _IMREAD_RGB is None else _IMREAD_RGB
    ok, buf = cv2.imencode(ext, src, flags)
    if not ok:  # pragma: no cover - the codec accepts every uint8 image within max_side
        raise InputError(f"{owner}: OpenCV could not encode a {h}x{w}x{c} image")
    out = cv2.imdecode(buf, mode)
    if out is None:  # pragma: no cover - the codec decodes what it just encoded
        raise InputError(f"{owner}: OpenCV could not decode its own {h}x{w}x{c} encoding")
    if c == 3 and _IMREAD_RGB is None:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
    return out.reshape(h, w, c)


def quality_param(doc: str) -> Param:
    """The ``quality`` parameter of a codec transform: 1-100 (default 75), or a range drawn per image."""
    return Param("quality", "int", default=75, low=1, high=100, allow_range=True, doc=doc)


class QualityCodec(Transform):
    """Base of the codec round trips: ``quality`` fixed or drawn per image, one real round trip per image.

    Subclasses declare ``params`` (with :func:`quality_param`) and implement :meth:`roundtrip`.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.randomized = isinstance(self.config["quality"], list)

    def roundtrip(self, image: np.ndarray, quality: int) -> np.ndarray:
        """Encode and decode one uint8 (H, W, C) image at ``quality``."""
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Draw one quality per image (constant when ``quality`` is a single value)."""
        return {"quality": per_image(self.config["quality"], rng, shape[0], integer=True)}

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Round-trip each image through the real codec at its quality."""
        out = np.empty_like(images)
        for i, q in enumerate(params["quality"]):
            out[i] = self.roundtrip(images[i], int(q))
        return out
