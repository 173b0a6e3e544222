"""Regenerate the golden outputs of every registered transform: tests/transforms/golden/outputs.npz.

Each leaf transform, with its default parameters, runs on two tiny images (colour and grey) for a few
seeds; the test (tests/transforms/test_golden.py) compares today's outputs with these within one grey
level, so an unintended change to a transform fails CI while a library release's rounding does not.
Regenerate only after a deliberate change, and say why in the commit:

    python scripts/make_golden.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fencebox.registry import all_transforms
from fencebox.testing import large_batch

GOLDEN = Path(__file__).resolve().parent.parent / "tests" / "transforms" / "golden" / "outputs.npz"
SEEDS = (0, 1, 2)
COMBINATORS = frozenset({"chain", "choice", "random_order", "random_apply"})


def golden_inputs() -> dict[str, np.ndarray]:
    """The two tiny input batches: one colour image and one grey image, 16 x 20 pixels."""
    colour = large_batch(1, 16, 20, 3, seed=42)
    grey = large_batch(1, 16, 20, 1, seed=43)
    return {"colour": colour, "grey": grey}


def golden_outputs() -> dict[str, np.ndarray]:
    """Every leaf transform's output on each input for each seed, keyed ``name/input/seed``."""
    out: dict[str, np.ndarray] = {}
    for name, cls in all_transforms().items():
        if name in COMBINATORS:
            continue
        t = cls()
        for kind, images in golden_inputs().items():
            for seed in SEEDS:
                out[f"{name}/{kind}/{seed}"] = t(images, rng=seed)
    return out


def main() -> None:
    """Write the golden file."""
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    outputs = golden_outputs()
    np.savez_compressed(GOLDEN, **outputs)
    print(f"wrote {len(outputs)} outputs to {GOLDEN} ({GOLDEN.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
