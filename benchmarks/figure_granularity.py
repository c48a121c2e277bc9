"""Figure of docs/granularity.md: one BSDS500 photo cut the three ways (dynamic, tau, K) from one hierarchy.

    python -m benchmarks.figure_granularity        # writes docs/figures/granularity.png

DiffCut with DINOv2-S at the default budget (1,024 tokens); the backbone runs once, then the output is
re-cut to pixels with ``labels_at(tau)`` and ``labels_for_count(K)``. Each panel shows the mean colour
of every segment, with the number of segments in its title.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from benchmarks.real_attention import DATA, MODEL
from diffcut_gpu import DiffCut
from diffcut_gpu.eval.figures import _pyplot, mean_colour_mosaic
from diffcut_gpu.io.images import read_image

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(MODEL))
    p.add_argument("--image", default=str(DATA / "images" / "val" / "101085.jpg"))
    p.add_argument("--out", default=str(ROOT / "docs" / "figures" / "granularity.png"))
    args = p.parse_args()
    torch.set_num_threads(1)
    rgb = np.asarray(read_image(args.image))
    image = torch.from_numpy(rgb).permute(2, 0, 1).float().div(255)[None]
    model = DiffCut.from_pretrained(args.model, backbone="vit")
    model.cut.full_hierarchy = True  # keep every candidate so that any tau or K can be re-cut
    out = model(image)
    panels = [("dynamic (default)", out.labels)]
    panels += [(f"tau = {t}", out.labels_at(t)) for t in (0.4, 0.6, 0.8)]
    panels += [(f"K = {k}", out.labels_for_count(k)) for k in (2, 4, 8)]
    plt = _pyplot()
    fig, axes = plt.subplots(2, 4, figsize=(12, 4.6))
    axes = axes.ravel()
    axes[0].imshow(rgb)
    axes[0].set_title("photo", fontsize=9)
    for ax, (title, labels) in zip(axes[1:], panels, strict=True):
        lab = labels[0].cpu().numpy()
        ax.imshow(mean_colour_mosaic(rgb, lab))
        ax.set_title(f"{title}: {len(np.unique(lab))} segments", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(args.out, dpi=72)
    print(args.out)


if __name__ == "__main__":
    main()
