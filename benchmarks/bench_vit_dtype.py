"""ViT backbone in bfloat16 vs float32 on CPU: time of the backbone and effect on the labels.

For the first ``--images`` BSDS500 val images: ``DiffCut`` with the DINOv2-S backbone (448 x 448 px as the CLI,
default segmentation settings) in float32 and in bfloat16. Reported per image: backbone process CPU time
in each dtype (least of 2), and the adjusted Rand index (ARI) between the two label maps (1 = the same
partition). Whether bfloat16 pays depends on the CPU: without native bfloat16 arithmetic (AVX512-BF16 or
AMX; ``torch.ops.mkldnn._is_mkldnn_bf16_supported()``) oneDNN emulates it and it is much slower.

    python -m benchmarks.bench_vit_dtype --images 4     # -> docs/results/bench_vit_dtype.json
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import environment, least_cpu_time, markdown_table, write_json
from benchmarks.real_attention import MODEL, load_image, val_images
from diffcut_gpu.modules.diffcut import DiffCut


def adjusted_rand_index(a: torch.Tensor, b: torch.Tensor) -> float:
    """ARI of two label maps of the same shape (Hubert & Arabie 1985), from their contingency table."""
    _, ia = a.flatten().unique(return_inverse=True)
    _, ib = b.flatten().unique(return_inverse=True)
    nb = int(ib.max()) + 1
    table = torch.bincount(ia * nb + ib, minlength=(int(ia.max()) + 1) * nb).double()
    table = table.view(-1, nb)

    def pairs(x: torch.Tensor) -> float:
        return float((x * (x - 1) / 2).sum())

    n = float(a.numel())
    index, rows, cols = pairs(table), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / (n * (n - 1) / 2)
    top = (rows + cols) / 2
    return 1.0 if top == expected else (index - expected) / (top - expected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = {"resolution": (448, 448)}
    models = {name: DiffCut.from_pretrained(MODEL, backbone="vit", dtype=dtype, backbone_kwargs=size)
              for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    rows = []
    for path in val_images(args.images):
        image = load_image(path)
        row = {"image": path.name}
        labels = {}
        for name, model in models.items():
            row[f"{name}_backbone_s"], _ = least_cpu_time(lambda m=model, x=image: m.backbone(x), 2)
            labels[name] = model(image).labels
            row[f"{name}_segments"] = int(labels[name].unique().numel())
        row["bf16_speedup"] = row["float32_backbone_s"] / row["bfloat16_backbone_s"]
        row["ari_bf16_vs_f32"] = adjusted_rand_index(labels["float32"], labels["bfloat16"])
        rows.append(row)
        print(row, flush=True)
    print(markdown_table(rows, list(rows[0])))
    env = environment()
    env.update(bf16_native=bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()), resolution="448x448",
               settings="DiffCut defaults (threshold dynamic, upsample concept)")
    print("wrote", write_json("bench_vit_dtype.json", {"environment": env, "rows": rows}))


if __name__ == "__main__":
    main()
