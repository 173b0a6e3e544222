"""Write ``geometric_before.npz``: the geometric transforms' outputs at commit c727bfb (before the fast paths).

The fast paths (``cv2.resize``, ``cv2.warpAffine``, slicing) must stay within 1 grey level of these, so
that the committed reports stay valid.  Run once from the repository root, on the code being replaced:
``python tests/transforms/data/make_geometric_before.py``.  ``tests/transforms/test__warp.py`` reads it.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import cv2
import numpy as np
from skimage import data

from fencebox.registry import all_transforms

SIZES = [(16, 16), (19, 27), (5, 3), (24, 10), (2, 2)]
CASES: list[tuple[str, dict[str, object]]] = [
    ("resize_pad", {}),
    ("resize_pad", {"min_scale": 0.5, "max_scale": 1.0}),
    ("resize_pad", {"min_scale": 0.9, "max_scale": 2.0, "out_size": 60}),
    ("random_crop", {}),
    ("random_crop", {"min_scale": 0.3, "max_scale": 0.9}),
    ("flip", {}),
    ("affine", {}),
    ("affine", {"border": "constant", "max_rotate": 40.0, "max_shift": 0.3}),
]


@cache
def _source(k: int) -> np.ndarray:
    return [data.astronaut, data.coffee, data.chelsea, data.rocket][k % 4]()


def photo(h: int, w: int, c: int, k: int) -> np.ndarray:
    """A real-photo test image: scikit-image photo ``k`` shrunk (INTER_AREA) and cropped to h x w x c."""
    src = _source(k)
    x = cv2.resize(src, (w * 3, h * 3), interpolation=cv2.INTER_AREA)[:h, :w]
    return x[..., :1] if c == 1 else x


def main() -> None:
    """Run every case (3 images, seed 1000 + case index) and save inputs and outputs."""
    transforms = all_transforms()
    out: dict[str, np.ndarray] = {"cases": np.array(json.dumps(CASES))}
    for ci, (name, kw) in enumerate(CASES):
        t = transforms[name](**kw)
        for si, (h, w) in enumerate(SIZES):
            for c in (1, 3):
                if "out_size" in kw and 2 * max(h, w) > int(kw["out_size"]):  # type: ignore[call-overload]
                    continue
                x = np.stack([photo(h, w, c, k) for k in range(3)])
                out[f"in_{ci}_{si}_{c}"] = x
                out[f"out_{ci}_{si}_{c}"] = t(x, rng=1000 + ci)
    np.savez_compressed(Path(__file__).with_name("geometric_before.npz"), **out)


if __name__ == "__main__":
    main()
