"""Regenerate FenceBox's built-in models (fencebox/models/weights/NAME.safetensors + NAME.json).

Usage: python scripts/train_builtin.py [NAME ...] [--out DIR] [--threads N]
Names: mnist, mnist-adv, mnist-advgan, faces (default: all).  Seeded and deterministic on CPU.
mnist-advgan (AdvGAN adversarial training, 8 epochs) takes about 6 minutes on an idle core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fencebox.models.loaders import WEIGHTS_DIR
from fencebox.models.training import RECIPES, save_model, train


def main() -> None:
    """Train each named recipe and write its weights and card."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for name in args.names:
        cfg = RECIPES[name]
        cfg.threads = args.threads
        t0 = time.perf_counter()
        result = train(cfg, on_epoch=lambda m: print(f"  {m}", flush=True))
        path = save_model(result.module, result.card, args.out, name)
        print(
            f"{name}: {result.card.accuracy} in {time.perf_counter() - t0:.0f} s -> {path} "
            f"({path.stat().st_size} bytes)",
            flush=True,
        )


if __name__ == "__main__":
    main()
