"""The README picture: two BSDS500 val photos segmented by `diffcut-gpu segment`, side by side.

    diffcut-gpu segment ../shared/data/bsds500/images/val/101085.jpg ../shared/data/bsds500/images/val/145086.jpg \
        --out outputs/overlays --backbone vit --model-path ../shared/models/dinov2-small --threshold dynamic
    python -m benchmarks.figure_overlays outputs/overlays/101085.overlay.png outputs/overlays/145086.overlay.png
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

OUT = Path(__file__).resolve().parents[1] / "docs" / "figures" / "overlays.png"


def side_by_side(paths: list[str], height: int = 320, gap: int = 8) -> Image.Image:
    """Images resized to one height and placed left to right on white."""
    tiles = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        tiles.append(im.resize((round(im.width * height / im.height), height), Image.Resampling.LANCZOS))
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), height), "white")
    x = 0
    for t in tiles:
        canvas.paste(t, (x, 0))
        x += t.width + gap
    return canvas


if __name__ == "__main__":
    OUT.parent.mkdir(parents=True, exist_ok=True)
    side_by_side(sys.argv[1:]).save(OUT)
    print("wrote", OUT)
