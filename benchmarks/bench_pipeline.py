"""End-to-end images/s of DiffCut (ours) vs a DiffCut-style pipeline, with time per stage and peak memory.

Ours: VAE posterior mean -> one UNet pass that stops after the last captured block, recording the
head-averaged self-attention -> batched level-synchronous RW-NCut -> concept upsampling.
DiffCut-style: the same VAE, the **full** UNet forward, features of the same block -> cosine graph ->
one image and one node at a time, dense eigh + 100 host-synced thresholds -> concept upsampling.

Random weights (speed does not depend on them): UNets from the configs in diffcut_gpu/models/configs.

    python -m benchmarks.bench_pipeline --quick                      # CPU smoke: tiny UNet, 64 px
    python -m benchmarks.bench_pipeline --configs unet_sd15:512 unet_sdxl:1024 unet_ssd1b:1024 \
        --batches 1 2 4 8 16                                         # the device benchmark (GPU)
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.common import environment, markdown_table, sync, time_it, write_json
from diffcut_gpu import DiffCut, cosine_affinity
from diffcut_gpu.baselines import diffcut_style_ncut
from diffcut_gpu.models.diffusion import DiffusionBackbone, load_config
from diffcut_gpu.upsample import upsample_labels


def _backbone(config: str, device: str, dtype: torch.dtype, stop_early: bool) -> DiffusionBackbone:
    cfg = load_config(config)
    g = torch.Generator().manual_seed(0)
    emb = torch.randn(1, 77, cfg["cross_attention_dim"], generator=g)
    pooled = None
    if cfg.get("addition_embed_type") == "text_time":
        pooled = torch.randn(1, cfg["projection_class_embeddings_input_dim"] - 6 * cfg["addition_time_embed_dim"],
                             generator=g)
    vae = "vae_tiny" if config.startswith("unet_tiny") else ("vae_sdxl" if pooled is not None else "vae_sd")
    return DiffusionBackbone.from_config(config, vae, torch_dtype=dtype, device=device, prompt_embeds=emb,
                                         pooled_prompt_embeds=pooled, stop_early=stop_early)


def _diffcut_style(backbone: DiffusionBackbone, images: torch.Tensor, tau: float) -> torch.Tensor:
    out = backbone(images)
    W = cosine_affinity(out.features.float(), alpha=10.0)
    h, w = out.grid
    tokens = torch.stack([diffcut_style_ncut(W[b], tau=tau, min_size=4)[0] for b in range(W.shape[0])]).view(-1, h, w)
    return upsample_labels(tokens, tuple(images.shape[-2:]), mode="concept", features=out.features.float())


def run(config: str, size: int, batch: int, device: str, dtype: torch.dtype, repeats: int) -> dict:
    images = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    ours = DiffCut(_backbone(config, device, dtype, stop_early=True), threshold=0.5)
    full = _backbone(config, device, dtype, stop_early=False)
    full.load_state_dict(ours.backbone.state_dict())

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t_total = time_it(lambda: ours(images), device=device, repeats=repeats)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else float("nan")
    t_vae = time_it(lambda: ours.backbone.encode(images), device=device, repeats=repeats)
    t_backbone = time_it(lambda: ours.backbone(images), device=device, repeats=repeats)
    feats = ours.backbone(images)
    t_ncut = time_it(lambda: ours.cut.segment(feats.attention, feats.grid), device=device, repeats=repeats)
    tokens = ours.cut.segment(feats.attention, feats.grid).token_labels
    t_up = time_it(lambda: upsample_labels(tokens, (size, size), mode="concept", features=feats.features.float()),
                   device=device, repeats=repeats)
    t_full_unet = time_it(lambda: full(images), device=device, repeats=repeats)
    t_base = time_it(lambda: _diffcut_style(full, images, 0.5), device=device, warmup=0, repeats=max(1, repeats // 2))
    segments_base = float(torch.stack([l.max() + 1 for l in _diffcut_style(full, images, 0.5)]).float().mean())
    sync(device)
    total = t_total["median_s"]
    return {
        "config": config,
        "size": size,
        "batch": batch,
        "ours_images_per_s": batch / total,
        "diffcut_style_images_per_s": batch / t_base["median_s"],
        "speedup": t_base["median_s"] / total,
        "vae_s": t_vae["median_s"],
        "unet_capture_s": t_backbone["median_s"] - t_vae["median_s"],
        "full_unet_s": t_full_unet["median_s"] - t_vae["median_s"],
        "ncut_s": t_ncut["median_s"],
        "upsample_s": t_up["median_s"],
        "capture_ncut_upsample_fraction": (t_ncut["median_s"] + t_up["median_s"]) / total,
        "peak_memory_gib": peak,
        "ours_segments_mean": float(ours(images).segmentation.num_segments.float().mean()),
        "diffcut_style_segments_mean": segments_base,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny UNet at 64 px: a CPU smoke run")
    parser.add_argument("--configs", nargs="+", default=["unet_sd15:512", "unet_ssd1b:1024", "unet_sdxl:1024"],
                        help="config:size pairs")
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    configs = ["unet_tiny:64"] if args.quick else args.configs
    batches = [1] if args.quick else args.batches
    rows = []
    for item in configs:
        config, size = item.split(":")
        for batch in batches:
            rows.append(run(config, int(size), batch, args.device, dtype, 2 if args.quick else args.repeats))
            print(markdown_table(rows[-1:], list(rows[-1])))
    print(markdown_table(rows, list(rows[0])))
    name = "bench_pipeline_quick.json" if args.quick else "bench_pipeline.json"
    print("wrote", write_json(name, {"environment": environment(args.device), "results": rows}))


if __name__ == "__main__":
    main()
