"""Helpers of the command-line tests: synthetic photos and the options of a tiny-model run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

#: Processing size used with the tiny model: 84 px = 6 x 6 patches of 14 px, so each image is 36 tokens.
TINY_RES = "84"


def photo(seed: int, size: tuple[int, int] = (60, 80)) -> np.ndarray:
    """``(H, W, 3)`` uint8: a few flat coloured rectangles plus noise, so segments exist."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = np.zeros((h, w, 3), dtype=np.float64)
    img[:] = rng.uniform(0, 255, 3)
    for _ in range(3):
        y0, x0 = rng.integers(0, h // 2), rng.integers(0, w // 2)
        img[y0 : y0 + h // 2, x0 : x0 + w // 2] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 8, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_photos(folder: Path, names: list[str], sizes: list[tuple[int, int]] | None = None) -> list[Path]:
    """Save ``photo(i)`` under each relative name (format from the extension); returns the paths."""
    paths = []
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        size = sizes[i] if sizes else (60 + 4 * i, 80 - 2 * i)
        Image.fromarray(photo(i, size)).save(path)
        paths.append(path)
    return paths


def tiny_args(model: Path, *extra: str) -> list[str]:
    """Options of every tiny-model run: CPU, the tiny checkpoint, small processing size, one decode thread."""
    return ["--backbone", "vit", "--model-path", str(model), "--resolution", TINY_RES, "--device", "cpu",
            "--workers", "1", "--quiet", *extra]
