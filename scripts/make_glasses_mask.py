"""Draw the eyeglass-frame mask the harness's ``glasses`` patch threat ships (fencebox/harness/assets/glasses.png).

Usage: python scripts/make_glasses_mask.py [--out PATH]

A front view of a plain pair of glasses (two rounded-rectangle rims, a bridge and the start of both
temples), white on black, at 240x80 pixels.  The harness scales it so the lens centres sit on a data
set's eye positions (:func:`fencebox.harness.patch.glasses_mask`).  Deterministic: rerunning gives the
same file.  The lens centres are at x = 60 and x = 180, y = 40 (recorded in ``GLASSES_LENS_CENTRES``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

WIDTH, HEIGHT = 240, 80
RIM = 14
"""Rim thickness in pixels of the 240x80 drawing (about 1 pixel once scaled to a 25x25 face crop)."""


def draw() -> Image.Image:
    """The frame as a greyscale image: 255 on the frame, 0 elsewhere."""
    img = Image.new("L", (WIDTH, HEIGHT), 0)
    d = ImageDraw.Draw(img)
    for cx in (60, 180):  # the two rims
        d.rounded_rectangle((cx - 52, 6, cx + 52, 74), radius=26, outline=255, width=RIM)
    d.line((110, 30, 130, 30), fill=255, width=RIM)  # bridge
    d.line((0, 24, 10, 24), fill=255, width=RIM)  # temples, as far as the crop shows them
    d.line((230, 24, 240, 24), fill=255, width=RIM)
    return img


def main() -> None:
    """Write the mask PNG."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    default = Path(__file__).resolve().parent.parent / "fencebox" / "harness" / "assets" / "glasses.png"
    parser.add_argument("--out", type=Path, default=default)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    draw().save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
