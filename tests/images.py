"""Image factories shared by the tests: encoded images, a decompression-bomb PNG, a digit-like image.

(No tests here.)
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import numpy as np
from PIL import Image


def encode_pil(img: Image.Image, fmt: str, **save: Any) -> bytes:
    """Encode a PIL image in ``fmt`` (PIL's format name), with PIL's save options."""
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def png(array: np.ndarray, **save: Any) -> bytes:
    """Encode a uint8 HxW or HxWxC array as PNG."""
    return encode_pil(Image.fromarray(array), "PNG", **save)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking gray PNG whose header claims width x height (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def digit(seed: int = 0, size: int = 28) -> np.ndarray:
    """A deterministic gray test image (HxW uint8): a bright blob on black, like an MNIST digit."""
    rng = np.random.default_rng(seed)
    img = np.zeros((size, size), np.uint8)
    y, x = rng.integers(size // 4, 3 * size // 4, 2)
    yy, xx = np.mgrid[:size, :size]
    img[(yy - y) ** 2 + (xx - x) ** 2 < (size // 5) ** 2] = 255
    return img
