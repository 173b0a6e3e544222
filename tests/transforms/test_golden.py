"""Golden outputs: every transform's output per seed on two tiny images, against the stored file.

Compared within one grey level, so a numpy, OpenCV or Pillow release that moves a rounding does not
turn CI red, while a change to a transform's behaviour does.  After a deliberate change, regenerate
with ``python scripts/make_golden.py`` and say why in the commit.
"""

from __future__ import annotations

import numpy as np
import pytest

from fencebox.registry import all_transforms
from scripts.make_golden import COMBINATORS, GOLDEN, SEEDS, golden_inputs

LEAVES = [name for name in all_transforms() if name not in COMBINATORS]


@pytest.fixture(scope="module")
def stored() -> dict[str, np.ndarray]:
    with np.load(GOLDEN) as data:
        return {k: data[k] for k in data.files}


@pytest.mark.parametrize("name", LEAVES)
def test_outputs_match_the_golden_file_within_one_grey_level(
    name: str, stored: dict[str, np.ndarray]
) -> None:
    t = all_transforms()[name]()
    for kind, images in golden_inputs().items():
        for seed in SEEDS:
            key = f"{name}/{kind}/{seed}"
            assert key in stored, f"no golden output for {key}: run scripts/make_golden.py"
            out = t(images, rng=seed)
            want = stored[key]
            assert out.shape == want.shape, key
            diff = int(np.abs(out.astype(np.int16) - want.astype(np.int16)).max())
            assert diff <= 1, f"{key} moved by {diff} grey levels from the golden output"


def test_the_golden_file_covers_every_transform(stored: dict[str, np.ndarray]) -> None:
    names = {key.split("/")[0] for key in stored}
    assert names == set(LEAVES)
