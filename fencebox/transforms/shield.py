"""SHIELD's stochastic local quantisation (Das et al., KDD 2018): a random JPEG quality per block.

Das, N., Shanbhogue, M., Chen, S.-T., Hohman, F., Li, S., Chen, L., Kounavis, M. E., Chau, D. H.
"SHIELD: Fast, Practical Defense and Vaccination for Deep Learning using JPEG Compression", KDD 2018.

Each ``block`` x ``block`` region of an image takes the pixels of the image JPEG-compressed at a quality
drawn uniformly from ``qualities``.  Done honestly and fast: each image is compressed once per quality its
block map uses (at most ``len(qualities)`` real libjpeg round trips) and the blocks are gathered from
those decodings with one vectorised selection.  With ``block=8`` (the default) a region is exactly one
JPEG luma block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from fencebox.errors import InputError, SpecError
from fencebox.registry import register
from fencebox.transforms._dct import SURROGATE_ROUNDING, diff_jpeg
from fencebox.transforms.base import Param, Params, Shape, Transform, is_integral
from fencebox.transforms.jpeg import SUBSAMPLING, jpeg_roundtrip

if TYPE_CHECKING:
    import torch

MAX_QUALITIES = 16


@dataclass(frozen=True)
class IntListParam(Param):
    """A parameter holding a non-empty list of distinct ints, each within ``[low, high]``."""

    max_items: int = MAX_QUALITIES

    def describe_range(self) -> str:
        """The accepted values, for error messages and tables."""
        return f"a list of 1-{self.max_items} distinct ints in [{self.low:g}, {self.high:g}]"

    def validate(self, owner: str, value: Any) -> Any:
        """Normalise to a list of ints (a single int is a one-item list); SpecError naming the range."""
        items = list(value) if isinstance(value, list | tuple) else [value]
        bad = SpecError(f"{owner}: parameter '{self.name}' must be {self.describe_range()}, got {value!r}")
        if not 1 <= len(items) <= self.max_items:
            raise bad
        out = []
        for v in items:
            if not is_integral(v):
                raise bad
            if (self.low is not None and v < self.low) or (self.high is not None and v > self.high):
                raise bad
            out.append(int(v))
        if len(set(out)) != len(out):
            raise bad
        return out


def expand_block_map(block_map: np.ndarray, block: int, height: int, width: int) -> np.ndarray:
    """Repeat a (..., Hb, Wb) block map to (..., height, width) pixels (the last blocks may be partial)."""
    return np.repeat(np.repeat(block_map, block, axis=-2), block, axis=-1)[..., :height, :width]


@register
class Shield(Transform):
    """SHIELD (Das et al. 2018): every 8x8 block JPEG-compressed at a quality drawn from a list."""

    name = "shield"
    params = (
        IntListParam(
            "qualities", "int", default=[20, 40, 60, 80], low=1, high=100, doc="JPEG qualities to draw from"
        ),
        Param(
            "block", "int", default=8, low=1, high=256, doc="side of the square regions sharing one quality"
        ),
        SUBSAMPLING,
    )
    randomized = True
    surrogate_kind = "approximate"

    def _check(self) -> None:
        self.config["qualities"] = list(self.config["qualities"])
        self.qualities = self.config["qualities"]
        self.randomized = len(self.qualities) > 1

    def _grid(self, height: int, width: int) -> tuple[int, int]:
        b = int(self.config["block"])
        return -(-height // b), -(-width // b)

    def sample(self, rng: np.random.Generator, shape: Shape) -> Params:
        """Draw the per-image block-quality map: (N, ceil(H / block), ceil(W / block)) JPEG qualities."""
        n, h, w, _ = shape
        choices = np.asarray(self.config["qualities"], dtype=np.int64)
        return {"quality_map": choices[rng.integers(0, len(choices), size=(n, *self._grid(h, w)))]}

    def _pixel_map(self, params: Params, n: int, h: int, w: int) -> np.ndarray:
        qmap = np.asarray(params["quality_map"])
        if qmap.shape != (n, *self._grid(h, w)):
            raise InputError(
                f"{self.name}: quality_map of shape {qmap.shape} does not fit a batch of {n} images of "
                f"{h}x{w} with block {self.config['block']} (expected {(n, *self._grid(h, w))})"
            )
        return expand_block_map(qmap, int(self.config["block"]), h, w)

    def apply(self, images: np.ndarray, params: Params) -> np.ndarray:
        """Compress each image once per quality it uses and gather every block from its quality's decoding."""
        n, h, w, c = images.shape
        self._pixel_map(params, n, h, w)  # validates the map's shape
        qmap = np.asarray(params["quality_map"])
        b = int(self.config["block"])
        hb, wb = self._grid(h, w)
        sub = str(self.config["subsampling"])
        out = np.empty_like(images)
        # Work on whole blocks: buffers padded to the block grid, viewed as (Hb, Wb, b, b, C), so that one
        # boolean index per quality moves all of its blocks; the padding (never initialised) is cropped off.
        gathered = np.empty((hb * b, wb * b, c), dtype=np.uint8)
        decoded = np.empty_like(gathered)
        gathered_blocks = gathered.reshape(hb, b, wb, b, c).transpose(0, 2, 1, 3, 4)
        decoded_blocks = decoded.reshape(hb, b, wb, b, c).transpose(0, 2, 1, 3, 4)
        for i in range(n):
            used = np.unique(qmap[i])
            if len(used) == 1:
                out[i] = jpeg_roundtrip(images[i], int(used[0]), sub)
                continue
            for q in used:
                decoded[:h, :w] = jpeg_roundtrip(images[i], int(q), sub)
                chosen = qmap[i] == q
                gathered_blocks[chosen] = decoded_blocks[chosen]
            out[i] = gathered[:h, :w]
        return out

    def surrogate(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        """Per-block mix of differentiable JPEG approximations (:func:`diff_jpeg`) at the drawn qualities."""
        import torch

        n, _, h, w = x.shape
        pixel_map = torch.as_tensor(self._pixel_map(params, n, h, w), device=x.device)[:, None]
        out = torch.zeros_like(x)
        sub = str(self.config["subsampling"])
        for q in np.unique(params["quality_map"]):
            mask = (pixel_map == int(q)).to(x.dtype)
            out = out + mask * diff_jpeg(x, int(q), sub, rounding=SURROGATE_ROUNDING)
        return out
