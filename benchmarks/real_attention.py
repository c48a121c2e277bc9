"""Real DINOv2-S attention on BSDS500 val images, cached under ``outputs/cache/`` (never committed).

The speed benchmarks time solvers on the graphs users actually cut: the head- and layer-averaged
patch attention of ``ViTBackbone`` (last 4 layers) on the first BSDS500 val images, resized to a square
``grid * 14`` pixels so that every image has ``N = grid^2`` tokens.

    python -m benchmarks.real_attention --grid 32 --images 8    # fills the cache (CPU: ~1 s per image)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DIFFCUT_BSDS", ROOT.parent / "shared" / "data" / "bsds500"))
MODEL = Path(os.environ.get("DIFFCUT_VIT", ROOT.parent / "shared" / "models" / "dinov2-small"))
CACHE = ROOT / "outputs" / "cache" / "real_attention"


def val_images(count: int) -> list[Path]:
    """The first ``count`` BSDS500 val images (sorted names), or a clear error when the data is missing."""
    folder = DATA / "images" / "val"
    if not folder.is_dir():
        raise FileNotFoundError(f"BSDS500 not found at {folder}: set DIFFCUT_BSDS to the bsds500 folder")
    return sorted(folder.glob("*.jpg"))[:count]


def load_image(path: Path) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1]."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


def real_attention(grid: int, count: int = 8) -> torch.Tensor:
    """(count, grid^2, grid^2) float32 row-stochastic attention of BSDS500 val images (cached)."""
    path = CACHE / f"val_{count}_grid{grid}.pt"
    if path.exists():
        return torch.load(path)
    from diffcut_gpu.models.vit import ViTBackbone

    backbone = ViTBackbone.from_pretrained(MODEL, resolution=(14 * grid, 14 * grid))
    maps = [backbone(load_image(p)).attention[0] for p in val_images(count)]
    out = torch.stack(maps).float()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", type=int, default=32)
    parser.add_argument("--images", type=int, default=8)
    args = parser.parse_args()
    P = real_attention(args.grid, args.images)
    print(f"{tuple(P.shape)} cached in {CACHE}")


if __name__ == "__main__":
    main()
