"""PAMR (``--refine``): shifted multiply-adds (``diffcut_gpu.upsample.pamr``) vs the unfold + einsum
implementation it replaced (frozen in ``tests/upsample/test_pamr.py``), same inputs, side by side.

Inputs: BSDS500 val images at full size (321 x 481) with coarse labels (a 32 x 48 colour quantisation
into 8 classes upsampled by nearest neighbour, like the labels PAMR refines in a real run). Both paths
run on each image; their label maps must be identical (max label difference 0) and their probabilities
agree to 1e-5 before the time counts. Process CPU time, 1 thread.

    python -m benchmarks.bench_pamr            # 3 images -> docs/results/bench_pamr.json
    python -m benchmarks.bench_pamr --images 1 --quick   # one image, writes nothing
"""

from __future__ import annotations

import argparse
import importlib.util

import torch
import torch.nn.functional as F

from benchmarks.common import RESULTS, environment, least_cpu_time, markdown_table, write_json
from benchmarks.real_attention import load_image, val_images
from diffcut_gpu.upsample import pamr

_TEST = RESULTS.parents[1] / "tests" / "upsample" / "test_pamr.py"


def frozen_reference():
    """``pamr_unfold`` from the test file (the old implementation, kept there as the reference)."""
    spec = importlib.util.spec_from_file_location("_pamr_frozen", _TEST)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.pamr_unfold


def coarse_masks(image: torch.Tensor, classes: int = 8) -> torch.Tensor:
    """One-hot (1, K, H, W) masks of a 32 x 48 colour quantisation, nearest-upsampled to the image."""
    h, w = image.shape[-2:]
    small = F.interpolate(image, size=(32, 48), mode="area")
    pixels = small.flatten(2)[0].T  # (32*48, 3)
    centres = pixels[torch.linspace(0, pixels.shape[0] - 1, classes).long()]
    for _ in range(10):  # a few Lloyd steps from fixed starts: deterministic
        assign = torch.cdist(pixels, centres).argmin(-1)
        centres = torch.stack([pixels[assign == c].mean(0) if (assign == c).any() else centres[c]
                               for c in range(classes)])
    labels = torch.cdist(pixels, centres).argmin(-1).view(1, 1, 32, 48).float()
    labels = F.interpolate(labels, size=(h, w), mode="nearest").long()[:, 0]
    return F.one_hot(labels, classes).permute(0, 3, 1, 2).float()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="writes no JSON")
    args = parser.parse_args()
    torch.set_num_threads(1)
    old = frozen_reference()
    rows = []
    for path in val_images(args.images):
        image = load_image(path)
        masks = coarse_masks(image)
        t_new, new = least_cpu_time(lambda i=image, m=masks: pamr(i, m), 3)
        t_old, ref = least_cpu_time(lambda i=image, m=masks: old(i, m), 1)
        label_diff = int((new.argmax(1) != ref.argmax(1)).sum())
        prob_diff = float((new - ref).abs().max())
        if label_diff or prob_diff > 1e-5:
            raise AssertionError(f"{path.name}: {label_diff} labels differ, max prob diff {prob_diff:.2e}")
        rows.append({"image": path.name, "size": f"{image.shape[-2]}x{image.shape[-1]}",
                     "classes": masks.shape[1], "unfold_s": t_old, "shifted_s": t_new, "speedup": t_old / t_new,
                     "labels_differing": label_diff, "max_prob_diff": prob_diff})
        print(rows[-1], flush=True)
    print(markdown_table(rows, ["image", "size", "classes", "unfold_s", "shifted_s", "speedup",
                                "labels_differing", "max_prob_diff"]))
    if not args.quick:
        env = environment()
        env.update(timer="process_time, least of 3 (new) / 1 (old)", iters=10)
        print("wrote", write_json("bench_pamr.json", {"environment": env, "rows": rows}))


if __name__ == "__main__":
    main()
