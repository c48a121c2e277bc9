"""Evaluation loop: run a backbone over a dataset once, cache its outputs, then score any number of methods.

Stage 1, ``build_cache``: every image goes through the backbone once (images of one size are batched
together, BSDS500 has two orientations); its patch attention ``(N, N)`` and features ``(N, C)`` are
stored as float16 with the token grid and the image size in ``<cache_dir>/<name>.pt``. Each file
records its key (absolute model path, layers, resolution); a file with another key is a miss and is
recomputed. The default cache directory is ``outputs/cache/<model>-<resolution>[-L<layers>]/<split>``.

Stage 2, ``evaluate``: cached images are processed in chunks of one size on ``device``. Per chunk, every
graph the methods need is built once (``reversibilize(power_walk(P, k))`` for RW-NCut,
``cosine_affinity(F, alpha)`` for the DiffCut feature graph) and cut once: one hierarchy explored up to
the largest constant tau (or fully when a dynamic policy is asked for), re-cut with ``labels_at`` for
every threshold of the grid, never recomputed. Token labels go to pixels with ``upsample_labels``
(concept assignment with the backbone features by default) at the ground-truth size.

Scores per image (BSDS500 has region maps, one per annotator, no class ids): one contingency table per
annotator gives covering, PRI and VI (as ``bsds_scores``) and the Hungarian mIoU / pixel accuracy with
that annotator's regions as the classes of the image (as one ``HungarianMIoU`` per image and annotator:
IoU-maximising one-to-one matching, unmatched regions count IoU 0, mIoU = mean over the annotator's
regions). Each score is averaged over annotators, then over images. Identical token labels of one image
(several taus often give the same cut) are scored once.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diffcut_gpu.eval.bsds_metrics import scores_from_contingency
from diffcut_gpu.eval.metrics import match_segments

__all__ = [
    "BackboneSpec",
    "EvalResult",
    "GroundTruth",
    "Method",
    "build_cache",
    "default_cache_dir",
    "evaluate",
    "load_cached",
    "parse_method",
    "region_scores",
    "resolve_threshold",
]

SCORES = ("covering", "pri", "vi", "miou", "pixel_accuracy")


# ----------------------------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class BackboneSpec:
    """What identifies a cache: the checkpoint folder, the attention layers averaged, the resolution."""

    model_path: str
    layers: tuple[int, ...] = (-4, -3, -2, -1)
    resolution: int | None = None

    def key(self) -> dict:
        return {
            "model_path": os.path.abspath(os.path.expanduser(self.model_path)),
            "layers": list(self.layers),
            "resolution": self.resolution,
        }

    def tag(self) -> str:
        """Folder name: ``<model>-<resolution>`` plus ``-L<layers>`` for non-default layers."""
        res = "native" if self.resolution is None else str(self.resolution)
        name = f"{Path(self.model_path.rstrip('/')).name}-{res}"
        if tuple(self.layers) != (-4, -3, -2, -1):
            name += "-L" + "_".join(str(i) for i in self.layers)
        return name

    def load(self, device: torch.device | str = "cpu"):
        """The ``ViTBackbone`` this spec describes (clear error when the model folder is missing)."""
        from diffcut_gpu.models import ViTBackbone

        path = Path(os.path.expanduser(self.model_path))
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model_path: expected a transformers checkpoint folder (config.json + weights), got "
                f"'{self.model_path}'; pass --model-path ../shared/models/dinov2-small"
            )
        return ViTBackbone.from_pretrained(path, device=device, layers=self.layers,
                                           resolution=self.resolution)


def default_cache_dir(spec: BackboneSpec, split: str, root: str | Path = "outputs/cache") -> Path:
    """``<root>/<model>-<resolution>[-L<layers>]/<split>``."""
    return Path(root) / spec.tag() / split


def _cache_file(cache_dir: Path, name: str) -> Path:
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
    files = [_cache_file(cache_dir, _name_of(dataset, i)) for i in range(len(dataset))]
    todo = [i for i, path in enumerate(files) if not _is_cached(path, key)]
    stats = {"computed": len(todo), "cached": len(dataset) - len(todo), "backbone_s": 0.0}
    if not todo:
        stats["images_per_s"] = None
        return stats
    if backbone is None:
        backbone = spec.load(device)
    pending: dict[tuple[int, int], list[dict]] = defaultdict(list)
    bar = _progress(len(todo), "backbone", progress)

    def flush(items: list[dict]) -> None:
        images = torch.stack([it["image"] for it in items]).to(device).float() / 255.0
        start = time.perf_counter()
        out = backbone(images)
        _sync(device)
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
                _cache_file(cache_dir, it["name"]),
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
    path = _cache_file(Path(cache_dir), name)
    if not path.is_file():
        raise FileNotFoundError(f"cache: expected {path}; run build_cache first")
    return torch.load(path, map_location="cpu", weights_only=True)


def _name_of(dataset, i: int) -> str:
    items = getattr(dataset, "items", None)
    if items is not None and isinstance(items[i], tuple) and isinstance(items[i][0], Path):
        return items[i][0].stem  # BSDS500 / image folders: the name without reading the image
    return dataset[i]["name"]



# --------------------------------------------------------------------------------------------- methods

KINDS = ("rwncut", "features", "kmeans", "diffcut")


@dataclass(frozen=True)
class Method:
    """One segmentation method of the grid; ``name`` round-trips through ``parse_method``.

    Attributes:
        kind: "rwncut" (our recursion on ``reversibilize(P^power)``), "features" (our recursion on the
            DiffCut feature graph ``cosine_affinity(F, alpha)``), "kmeans" (cosine k-means on the rows of
            ``P^power`` when ``on="attention"``, on the features when ``on="features"``, with per image the
            number of segments of ``rwncut`` at the same power and threshold), "diffcut" (DiffCut's
            per-node recursion, dense eigh + 100 thresholds, on the feature graph; constant tau only).
        threshold: constant tau (split while NCut < tau) or a policy name ("dynamic", "null", "otsu",
            "gap", ... any name of ``diffcut_gpu.spectral.policy_names()``).
        power: k of the walk ``P^k`` (rwncut, kmeans).
        on: descriptors clustered by kmeans: "attention" or "features".
        alpha: sharpening exponent of the feature graph (features, diffcut).
    """

    kind: str
    threshold: float | str = "dynamic"
    power: int = 1
    on: str = "attention"
    alpha: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method: expected a kind in {KINDS}, got {self.kind!r}")
        if isinstance(self.power, bool) or not isinstance(self.power, int) or self.power < 1:
            raise ValueError(f"power: expected an int >= 1, got {self.power!r}")
        if self.on not in ("attention", "features"):
            raise ValueError(f"on: expected 'attention' or 'features', got {self.on!r}")
        if self.kind == "diffcut" and isinstance(self.threshold, str):
            raise ValueError(f"threshold: expected a number for the diffcut baseline, got {self.threshold!r}")
        resolve_threshold(self.threshold)  # fail early on an unknown policy name

    @property
    def name(self) -> str:
        tau = self.threshold if isinstance(self.threshold, str) else f"{self.threshold:g}"
        parts = [f"threshold={tau}"]
        if self.kind in ("rwncut", "kmeans"):
            parts.insert(0, f"power={self.power}")
        if self.kind == "kmeans":
            parts.insert(0, f"on={self.on}")
        if self.kind in ("features", "diffcut") and self.alpha != 10.0:
            parts.append(f"alpha={self.alpha:g}")
        return f"{self.kind}:" + ",".join(parts)

    def graph(self) -> tuple:
        """Key of the graph this method cuts: ("attention", k) or ("features", alpha)."""
        if self.kind in ("rwncut", "kmeans"):
            return ("attention", self.power)
        return ("features", self.alpha)


def parse_method(text: str, *, threshold: float | str = "dynamic", power: int = 1) -> Method:
    """``"kind[:key=value,...]"`` -> ``Method``; ``threshold`` and ``power`` fill keys that are not given.

    Keys: threshold (a number or a policy name), power, on, alpha.
    Example: ``"rwncut:power=2,threshold=0.3"``.
    """
    kind, _, rest = text.strip().partition(":")
    kw: dict = {"threshold": threshold, "power": power}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or key not in ("threshold", "power", "on", "alpha"):
            raise ValueError(f"method: expected 'kind[:key=value,...]' with keys threshold, power, on, "
                             f"alpha, got {text!r}")
        kw[key] = _number_or_name(value) if key == "threshold" else value
    try:
        kw["power"] = int(kw["power"])
        if "alpha" in kw:
            kw["alpha"] = float(kw["alpha"])
    except ValueError:
        raise ValueError(f"method: expected an int power and a float alpha, got {text!r}") from None
    return Method(kind, **kw)


def _number_or_name(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def resolve_threshold(threshold: float | str, graph: Tensor | None = None):
    """A ``ThresholdPolicy`` from a number, "dynamic" or any policy name (``spectral.make_policy``);
    ``graph`` is the (B, N, N) graph that is cut (policies that score partitions on it need it). Without
    it, a name is only checked."""
    from diffcut_gpu.spectral import make_policy, policy_names

    if graph is None and isinstance(threshold, str):
        if threshold not in policy_names():
            make_policy(threshold)  # raises the registry's error message
        return threshold
    return make_policy(threshold, graph=graph)


# --------------------------------------------------------------------------------------------- scores


@dataclass
class GroundTruth:
    """Annotator region maps of one image, compacted: region ids of annotator k are offset_k + 0..R_k-1."""

    ids: Tensor  # (K * H * W,) int64
    counts: list[int]  # R_k per annotator
    shape: tuple[int, int]

    @classmethod
    def from_maps(cls, gts: Sequence[Tensor], device: torch.device | str = "cpu") -> GroundTruth:
        from diffcut_gpu.eval.labels import compact_ids

        if len(gts) == 0:
            raise ValueError("gts: expected at least one (H, W) region map, got none")
        shape = tuple(gts[0].shape)
        if any(tuple(g.shape) != shape for g in gts):
            raise ValueError(f"gts: expected region maps of one shape, got {[tuple(g.shape) for g in gts]}")
        values = torch.stack([torch.as_tensor(g) for g in gts]).to(device=device, dtype=torch.long)
        group = torch.arange(len(gts), device=values.device).repeat_interleave(values[0].numel())
        ids, counts = compact_ids(values.reshape(-1), group, len(gts))
        return cls(ids=ids, counts=counts.tolist(), shape=shape)


def region_scores(pred: Tensor, gt: GroundTruth | Sequence[Tensor]) -> dict[str, float]:
    """Covering, PRI, VI, Hungarian mIoU and pixel accuracy of one ``(H, W)`` prediction, annotator mean.

    One contingency table per annotator (one ``bincount`` for all): covering / Rand index / VI as in
    ``bsds_scores``; mIoU and pixel accuracy as one ``HungarianMIoU`` on that image with the annotator's
    regions as classes (IoU-maximising one-to-one matching; an unmatched region has IoU 0).
    """
    if not isinstance(gt, GroundTruth):
        gt = GroundTruth.from_maps(gt, pred.device)
    if tuple(pred.shape) != gt.shape:
        raise ValueError(f"pred: expected the ground-truth shape {gt.shape}, got {tuple(pred.shape)}")
    _, pred_ids = torch.unique(pred.reshape(-1).to(gt.ids.device), return_inverse=True)
    s = int(pred_ids.max()) + 1
    total = sum(gt.counts)
    table = torch.bincount(gt.ids * s + pred_ids.repeat(len(gt.counts)), minlength=total * s).view(total, s)
    per = []
    for block in torch.split(table.cpu(), gt.counts, dim=0):
        scores = scores_from_contingency(block)
        conf = block.numpy().T  # (S segments, R regions)
        assign = match_segments(conf)
        hit = np.flatnonzero(assign >= 0)
        inter = conf[hit, assign[hit]].astype(np.float64)
        union = conf[hit].sum(1) + conf[:, assign[hit]].sum(0) - inter
        iou = np.zeros(conf.shape[1])
        iou[assign[hit]] = inter / union
        scores["miou"] = float(iou.mean())
        scores["pixel_accuracy"] = float(inter.sum() / conf.sum())
        per.append(scores)
    return {
        "covering": float(np.mean([p["covering"] for p in per])),
        "pri": float(np.mean([p["ri"] for p in per])),
        "vi": float(np.mean([p["vi"] for p in per])),
        "miou": float(np.mean([p["miou"] for p in per])),
        "pixel_accuracy": float(np.mean([p["pixel_accuracy"] for p in per])),
    }


# ----------------------------------------------------------------------------------------------- loop


@dataclass
class EvalResult:
    """What ``evaluate`` measured.

    Attributes:
        summary: method name -> mean over images of covering, pri, vi, miou, pixel_accuracy, plus the mean
            number of segments (token level) and of per-image thresholds (``tau``), and ``num_images``.
        per_image: method name -> one dict per image (name, the five scores, segments, tau).
        timing: seconds per stage: load (cache + ground truth), graph, ncut, kmeans, diffcut, upsample,
            metrics.
        examples: image name -> ``dict(image=uint8 (3, H, W), gt=(H, W), pred={method: (H, W)})``.
    """

    summary: dict
    per_image: dict
    timing: dict
    examples: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"summary": self.summary, "per_image": self.per_image, "timing": self.timing}


def evaluate(
    dataset,
    cache_dir: str | Path,
    methods: Iterable[Method | str],
    *,
    device: torch.device | str = "cpu",
    upsample: str = "concept",
    min_size: int = 4,
    max_depth: int = 8,
    chunk_size: int = 16,
    examples: Iterable[str] = (),
    spec: BackboneSpec | None = None,
    progress: bool = True,
) -> EvalResult:
    """Score ``methods`` on ``dataset`` from the backbone outputs cached in ``cache_dir``.

    Args:
        dataset: items ``dict(image, gt=list of (H, W) region maps, name)`` (e.g. ``BSDS500``).
        cache_dir: filled by ``build_cache`` for the same dataset.
        methods: ``Method`` objects or their names (``parse_method``).
        device: where graphs, cuts, upsampling and contingency tables are computed.
        upsample: ``upsample_labels`` mode: "concept" (default: cosine to each segment's mean backbone
            feature), "nearest" or "majority".
        min_size, max_depth: of ``recursive_ncut`` (and of the diffcut baseline), for every method.
        chunk_size: images of one size processed together (memory: about ``chunk * N^2 * 4`` bytes a graph).
        examples: image names whose pixel labels are kept in ``EvalResult.examples`` (for figures).
        spec: when given, every cached item must carry its key (guards against a mixed-up cache folder).
        progress: tqdm bar.
    """
    from diffcut_gpu.upsample.labels import MODES

    methods = list(dict.fromkeys(m if isinstance(m, Method) else parse_method(m) for m in methods))
    if not methods:
        raise ValueError("methods: expected at least one method, got none")
    if upsample not in MODES:
        raise ValueError(f"upsample: expected one of {MODES}, got {upsample!r}")
    limits = (("min_size", min_size, 1), ("max_depth", max_depth, 0), ("chunk_size", chunk_size, 1))
    for arg, value, low in limits:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{arg}: expected an int >= {low}, got {value!r}")
    cache_dir = Path(cache_dir)
    names = [_name_of(dataset, i) for i in range(len(dataset))]
    missing = [n for n in names if not _cache_file(cache_dir, n).is_file()]
    if missing:
        raise FileNotFoundError(f"cache: expected {len(names)} files in {cache_dir}, {len(missing)} missing "
                                f"(e.g. {missing[0]}.pt); run build_cache first")
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, n in enumerate(names):
        item = load_cached(cache_dir, n)
        if spec is not None and item.get("key") != spec.key():
            raise ValueError(f"cache: expected outputs of {spec.key()} in {cache_dir}, got {item.get('key')} "
                             f"for {n}; rebuild it with build_cache(dataset, spec, cache_dir)")
        groups[(tuple(item["grid"]), tuple(item["image_size"]))].append(i)

    timing = dict.fromkeys(("load", "graph", "ncut", "kmeans", "diffcut", "upsample", "metrics"), 0.0)
    per_image: dict[str, list] = {m.name: [] for m in methods}
    scorer = _Scorer(upsample, set(examples), timing, device)
    bar = _progress(len(names), "evaluate", progress)
    for (grid, size), indices in groups.items():
        for start in range(0, len(indices), chunk_size):
            chunk = indices[start : start + chunk_size]
            with _Timer(timing, "load", device):
                items = [load_cached(cache_dir, names[i]) for i in chunk]
                P = torch.stack([it["attention"] for it in items]).to(device=device, dtype=torch.float32)
                P = P / P.sum(-1, keepdim=True)  # float16 storage leaves rows off 1 by ~1e-4
                F = torch.stack([it["features"] for it in items]).to(device=device, dtype=torch.float32)
                data = [dataset[i] for i in chunk]
                gts = [GroundTruth.from_maps(d["gt"], device) for d in data]
            labels, taus = _segment_chunk(P, F, methods, min_size, max_depth, timing, device)
            for m in methods:
                per_image[m.name] += scorer(m.name, labels[m.name], taus[m.name], F, grid, size, gts, data)
            bar.update(len(chunk))
    bar.close()

    summary = {}
    for m in methods:
        rows = per_image[m.name]
        summary[m.name] = {k: float(np.mean([r[k] for r in rows])) for k in (*SCORES, "segments", "tau")}
        summary[m.name]["num_images"] = len(rows)
    return EvalResult(summary=summary, per_image=per_image, timing=timing, examples=scorer.shown)


def _segment_chunk(P: Tensor, F: Tensor, methods: list[Method], min_size: int, max_depth: int,
                   timing: dict, device) -> tuple[dict, dict]:
    """Token labels ``(B, N)`` and per-image thresholds ``(B,)`` of every method on one chunk."""
    from diffcut_gpu.baselines import diffcut_style_ncut, kmeans_segments
    from diffcut_gpu.spectral import cosine_affinity, power_walk, reversibilize

    wanted: dict[tuple, set] = defaultdict(set)  # graph -> thresholds our recursion must answer
    for m in methods:
        if m.kind != "diffcut":
            wanted[m.graph()].add(m.threshold)
    graphs: dict[tuple, Tensor] = {}
    walks: dict[int, Tensor] = {}
    with _Timer(timing, "graph", device):
        for key in {*wanted, *(m.graph() for m in methods)}:
            if key[0] == "attention":
                walks[key[1]] = power_walk(P, key[1]) if key[1] > 1 else P
                graphs[key] = reversibilize(walks[key[1]])
            else:
                graphs[key] = cosine_affinity(F, alpha=key[1])
    cuts: dict[tuple, tuple[Tensor, Tensor]] = {}
    with _Timer(timing, "ncut", device):
        for key, thresholds in wanted.items():
            for t, out in _cut_all(graphs[key], thresholds, min_size, max_depth).items():
                cuts[(key, t)] = out
    labels, taus = {}, {}
    for m in methods:
        if m.kind in ("rwncut", "features"):
            labels[m.name], taus[m.name] = cuts[(m.graph(), m.threshold)]
        elif m.kind == "kmeans":
            ref, tau = cuts[(m.graph(), m.threshold)]
            with _Timer(timing, "kmeans", device):
                counts = torch.tensor([int(torch.unique(r).numel()) for r in ref])
                x = walks[m.power] if m.on == "attention" else F
                labels[m.name], taus[m.name] = kmeans_segments(x, counts), tau
        else:
            with _Timer(timing, "diffcut", device):
                W = graphs[m.graph()]
                tau = float(m.threshold)
                labels[m.name] = torch.stack([
                    diffcut_style_ncut(W[b], tau=tau, min_size=min_size, max_depth=max_depth)[0]
                    for b in range(W.shape[0])
                ])
                taus[m.name] = torch.full((W.shape[0],), float(m.threshold), dtype=torch.float64)
    return labels, taus


def _cut_all(W: Tensor, thresholds: set, min_size: int, max_depth: int) -> dict:
    """One hierarchy for all thresholds: explored up to the largest constant, or fully for a policy."""
    from diffcut_gpu.spectral import ConstantThreshold, recursive_ncut

    policies = {t: resolve_threshold(t, graph=W) for t in thresholds}
    constants = [p.tau for p in policies.values() if isinstance(p, ConstantThreshold)]
    full = len(constants) < len(policies)
    seg = recursive_ncut(W, threshold=max(constants, default=1.0), min_size=min_size, max_depth=max_depth,
                         full_hierarchy=True if full else None)
    out = {}
    for t, policy in policies.items():
        tau = policy(seg).to(torch.float64)
        out[t] = (seg.labels_at(tau), tau.cpu())
    return out


class _Scorer:
    """Upsamples and scores token labels; identical labelings of one image are scored once per call."""

    def __init__(self, upsample: str, keep: set, timing: dict, device) -> None:
        self.upsample, self.keep, self.timing, self.device = upsample, keep, timing, device
        self.memo: dict = {}  # (image name, labels digest) -> (scores, pixel labels or None)
        self.shown: dict = {}

    def __call__(self, name: str, labels: Tensor, taus: Tensor, F: Tensor, grid: tuple, size: tuple,
                 gts: list, data: list) -> list[dict]:
        from diffcut_gpu.upsample import upsample_labels

        keys = [(d["name"], hashlib.blake2b(lab.cpu().numpy().tobytes(), digest_size=16).digest())
                for d, lab in zip(data, labels)]
        wanted = [d["name"] in self.keep for d in data]
        todo = [b for b, k in enumerate(keys)
                if k not in self.memo or (wanted[b] and self.memo[k][1] is None)]
        if todo:
            with _Timer(self.timing, "upsample", self.device):
                idx = torch.tensor(todo, device=labels.device)
                tokens = labels.index_select(0, idx).view(len(todo), *grid).to(F.device)
                feats = F.index_select(0, idx.to(F.device)) if self.upsample == "concept" else None
                pixels = upsample_labels(tokens, size, mode=self.upsample, features=feats)
            with _Timer(self.timing, "metrics", self.device):
                for j, b in enumerate(todo):
                    kept = pixels[j].cpu() if wanted[b] else None
                    self.memo[keys[b]] = (region_scores(pixels[j], gts[b]), kept)
        rows = []
        for b, k in enumerate(keys):
            scores, pix = self.memo[k]
            rows.append({"name": data[b]["name"], **scores, "segments": int(torch.unique(labels[b]).numel()),
                         "tau": float(taus[b])})
            if wanted[b]:
                first = {"image": data[b]["image"], "gt": data[b]["gt"][0], "pred": {}}
                ex = self.shown.setdefault(data[b]["name"], first)
                ex["pred"][name] = pix
        return rows


class _Timer:
    """Adds the wall time of a ``with`` block (device synchronised) to ``timing[stage]``."""

    def __init__(self, timing: dict, stage: str, device) -> None:
        self.timing, self.stage, self.device = timing, stage, device

    def __enter__(self) -> None:
        _sync(self.device)
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        _sync(self.device)
        self.timing[self.stage] += time.perf_counter() - self.start


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def _sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
