"""Segment counts on synthetic images: blank, constant colours, noise, one object, two objects.

    python -m benchmarks.eval_synthetic            # writes docs/results/eval_synthetic.json

Each image (448x448 pixels, built by ``tests/modules/test_null_segments.py::_image``) goes through
``DiffCut`` with DINOv2-S at the default budget (1,024 tokens) and with the tiny random-weight diffusion
backbone of the tests; ``dynamic`` (null bound) against the previous default ``logotsu``.
Expected: 1 segment for the structureless images, 2 for one object, 3 for two objects.
"""

from __future__ import annotations

from pathlib import Path

import torch

from benchmarks.common import environment, write_json
from diffcut_gpu import DiffCut
from tests.modules.test_null_segments import _image

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("grey", "black", "white", "red", "noise", "gauss", "object", "two")
EXPECTED = {"object": 2, "two": 3}


def main() -> None:
    torch.set_num_threads(1)
    from tests.models.test_diffusion import _backbone

    vit = DiffCut.from_pretrained(ROOT.parent / "shared" / "models" / "dinov2-small", backbone="vit").backbone
    backbones = {"dinov2-small (1,024 tokens)": (vit, 448),
                 "tiny random diffusion (unet_tiny)": (_backbone("unet_tiny"), 64)}
    rows = []
    for label, (backbone, size) in backbones.items():
        images = torch.cat([_image(k, size=size) for k in KINDS])
        for threshold in ("dynamic", "logotsu"):
            out = DiffCut(backbone, threshold=threshold)(images)
            counts = dict(zip(KINDS, out.segmentation.num_segments.tolist(), strict=True))
            rows.append({"backbone": label, "threshold": threshold, "segments": counts})
            print(label, threshold, counts, flush=True)
    write_json("eval_synthetic.json", {"rows": rows, "expected": {k: EXPECTED.get(k, 1) for k in KINDS},
                                       "environment": environment()})


if __name__ == "__main__":
    main()
