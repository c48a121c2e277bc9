"""Backbone cache: run the backbone over a dataset once and keep its outputs on disk.

Every image goes through the backbone once (images of one size are batched together, BSDS500 has two
orientations); its patch attention ``(N, N)`` and features ``(N, C)`` are stored as float16 with the token
grid and the image size in ``<cache_dir>/<name>.pt``. Each file records its key (backbone kind, absolute
model path, layers, resolution); a file with another key is a miss and is recomputed. The default cache
directory is ``outputs/cache/<model>-<resolution>[-L<layers>]/<split>``.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BACKBONES", "BackboneSpec", "build_cache", "default_cache_dir", "item_name", "load_cached"]

BACKBONES = ("vit", "diffusion")


@dataclass(frozen=True)
class BackboneSpec:
    """What identifies a cache: the backbone kind, its checkpoint folder, the layers, the resolution.

    ``layers`` are the ViT attention layers averaged (unused by the diffusion backbone, which averages
    the self-attention of its UNet down blocks). ``resolution`` is the short side fed to the backbone
    (``None``: the image size), rounded to the patch size (ViT) or the VAE x UNet stride (diffusion).
    """

    model_path: str
    layers: tuple[int, ...] = (-4, -3, -2, -1)
    resolution: int | None = None
    backbone: str = "vit"

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone: expected one of {BACKBONES}, got {self.backbone!r}")

    def key(self) -> dict:
        key = {
            "model_path": os.path.abspath(os.path.expanduser(self.model_path)),
            "layers": list(self.layers),
            "resolution": self.resolution,
        }
        if self.backbone != "vit":  # ViT caches written before the diffusion backbone keep their key
            key["backbone"] = self.backbone
        return key

    def tag(self) -> str:
        """Folder name: ``<model>-<resolution>`` plus ``-L<layers>`` for non-default layers."""
        res = "native" if self.resolution is None else str(self.resolution)
        name = f"{Path(self.model_path.rstrip('/')).name}-{res}"
        if tuple(self.layers) != (-4, -3, -2, -1):
            name += "-L" + "_".join(str(i) for i in self.layers)
        return name

    def check(self, arg: str = "model_path") -> None:
        """Raise ``FileNotFoundError`` naming ``arg`` when the model folder is not a checkpoint of its kind."""
        path = Path(os.path.expanduser(self.model_path))
        if self.backbone == "vit" and not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{arg}: expected a transformers checkpoint folder (config.json + weights), got "
                f"'{self.model_path}'; pass --model-path ../shared/models/dinov2-small"
            )
        if self.backbone == "diffusion" and not (path / "unet").is_dir():
            raise FileNotFoundError(
                f"{arg}: expected a diffusers pipeline folder (unet/, vae/, scheduler/, text_encoder/, "
                f"tokenizer/), got '{self.model_path}'; pass --model-path ../shared/models/<snapshot>"
            )

    def load(self, device: torch.device | str = "cpu") -> Callable:
        """The backbone this spec describes, as ``(B, 3, H, W) in [0, 1] -> BackboneOutput``."""
        self.check()
        path = Path(os.path.expanduser(self.model_path))
        if self.backbone == "vit":
            from diffcut_gpu.models import ViTBackbone

            return ViTBackbone.from_pretrained(path, device=device, layers=self.layers,
                                               resolution=self.resolution)
        from diffcut_gpu.models import DiffusionBackbone

        model = DiffusionBackbone.from_pretrained(path, device=device, local_files_only=True)
        return _Resized(model, self.resolution)


class _Resized(nn.Module):
    """Resizes images to sides the diffusion backbone accepts (bilinear, antialiased) before calling it."""

    def __init__(self, backbone: nn.Module, resolution: int | None) -> None:
        from diffcut_gpu.models.diffusion import _vae_factor

        super().__init__()
        self.backbone, self.resolution = backbone, resolution
        self.multiple = _vae_factor(backbone.vae) * 2 ** (len(backbone.unet.config.down_block_types) - 1)

    def forward(self, images: Tensor):
        from diffcut_gpu.models.vit import target_size

        size = target_size(*images.shape[-2:], self.multiple, self.resolution)
        if size != tuple(images.shape[-2:]):
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False,
                                   antialias=True).clamp_(0, 1)
        return self.backbone(images)


def default_cache_dir(spec: BackboneSpec, split: str, root: str | Path = "outputs/cache") -> Path:
    """``<root>/<model>-<resolution>[-L<layers>]/<split>``."""
    return Path(root) / spec.tag() / split


def cache_file(cache_dir: str | Path, name: str) -> Path:
    """Where the outputs of image ``name`` are cached."""
    return Path(cache_dir) / f"{name}.pt"


def _is_cached(path: Path, key: dict) -> bool:
    if not path.is_file():
        return False
    try:
        return torch.load(path, map_location="cpu", weights_only=True).get("key") == key
    except Exception:  # a truncated or foreign file is a miss, recomputed below
        return False


def build_cache(
    dataset,
    spec: BackboneSpec,
    cache_dir: str | Path,
    *,
    backbone: Callable | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 8,
    progress: bool = True,
) -> dict:
    """Run the backbone on every image of ``dataset`` missing from ``cache_dir``; returns timing and counts.

    Args:
        dataset: items ``dict(image=uint8 (3, H, W), name=str, ...)``.
        spec: backbone identity (the cache key).
        cache_dir: folder of ``<name>.pt`` files.
        backbone: callable ``(B, 3, H, W) in [0, 1] -> BackboneOutput``; loaded from ``spec`` on first need.
        device: where the backbone runs.
        batch_size: images per forward pass (images of one size only).
        progress: tqdm bar.

    Returns:
        ``dict(computed=int, cached=int, backbone_s=float, images_per_s=float or None)``.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = spec.key()
    files = [cache_file(cache_dir, item_name(dataset, i)) for i in range(len(dataset))]
    todo = [i for i, path in enumerate(files) if not _is_cached(path, key)]
    stats = {"computed": len(todo), "cached": len(dataset) - len(todo), "backbone_s": 0.0}
    if not todo:
        stats["images_per_s"] = None
        return stats
    if backbone is None:
        backbone = spec.load(device)
    pending: dict[tuple[int, int], list[dict]] = defaultdict(list)
    bar = progress_bar(len(todo), "backbone", progress)

    def flush(items: list[dict]) -> None:
        images = torch.stack([it["image"] for it in items]).to(device).float() / 255.0
        start = time.perf_counter()
        out = backbone(images)
        sync(device)
        stats["backbone_s"] += time.perf_counter() - start
        for b, it in enumerate(items):
            torch.save(
                {
                    "key": key,
                    "name": it["name"],
                    "attention": out.attention[b].to(torch.float16).cpu().clone(),
                    "features": out.features[b].to(torch.float16).cpu().clone(),
                    "grid": tuple(int(g) for g in out.grid),
                    "image_size": tuple(int(s) for s in it["image"].shape[-2:]),
                },
                cache_file(cache_dir, it["name"]),
            )
        bar.update(len(items))

    for i in todo:
        item = dataset[i]
        size = tuple(item["image"].shape[-2:])
        pending[size].append({"image": item["image"], "name": item["name"]})
        if len(pending[size]) == batch_size:
            flush(pending.pop(size))
    for items in pending.values():
        flush(items)
    bar.close()
    stats["images_per_s"] = len(todo) / max(stats["backbone_s"], 1e-9)
    return stats


def load_cached(cache_dir: str | Path, name: str) -> dict:
    """A cached item: ``attention (N, N)``, ``features (N, C)`` (float16), ``grid``, ``image_size``."""
    path = cache_file(Path(cache_dir), name)
    if not path.is_file():
        raise FileNotFoundError(f"cache: expected {path}; run build_cache first")
    return torch.load(path, map_location="cpu", weights_only=True)


def item_name(dataset, i: int) -> str:
    """Name of item ``i``, without reading its image when the reader lists its files."""
    items = getattr(dataset, "items", None)
    if items is not None and isinstance(items[i], tuple):
        if isinstance(items[i][0], Path):
            return items[i][0].stem  # BSDS500 / image folders: (image path, label path)
        if isinstance(items[i][0], str):
            return items[i][0]  # Cityscapes: (name, image path, label path)
    ids = getattr(dataset, "ids", None)
    if ids is not None:
        return ids[i]  # COCO-Stuff: image ids
    return dataset[i]["name"]


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar, silent when ``enabled`` is False."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def sync(device: torch.device | str) -> None:
    """Wait for the device, so that wall times measure finished work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
