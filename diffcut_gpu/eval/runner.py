"""Evaluation loop: score any number of methods from the backbone outputs cached by ``build_cache``.

Cached images are processed in chunks of one size on ``device``. Per chunk, every graph the methods need
is built once with ``RWNCut.build_graph`` (``reversibilize(P^k)`` for RW-NCut, ``cosine_affinity(F, alpha)``
for the DiffCut feature graph) and cut once: one hierarchy explored up to the largest constant tau (or
fully when a dynamic policy is asked for), re-cut with ``labels_at`` for every threshold of the grid,
never recomputed. Token labels go to pixels with ``upsample_labels`` (concept assignment with the
backbone features by default) at the ground-truth size and are scored by ``eval.scoring``: region scores
against BSDS500 annotators, or the matched-class counts of the unsupervised protocol against a class map
(COCO-Stuff-27, Cityscapes-27, label folders), summed over the dataset. Identical token labels of one image
(several taus often give the same cut) are scored once.

The pieces: ``eval.backbone_cache`` (stage 1), ``eval.methods`` (the method names), ``eval.scoring``.
"""

from __future__ import annotations

import hashlib
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from diffcut_gpu.eval.backbone_cache import BackboneSpec, cache_file, item_name, load_cached, progress_bar, sync
from diffcut_gpu.eval.methods import Method, parse_method, resolve_threshold
from diffcut_gpu.eval.metrics import HungarianMIoU
from diffcut_gpu.eval.scoring import REGION_SCORES, GroundTruth, class_counts, infer_num_classes, region_scores

__all__ = ["EvalResult", "evaluate"]

@dataclass
class EvalResult:
    """What ``evaluate`` measured.

    Attributes:
        summary: method name -> the scores (region datasets: mean over images of covering, pri, vi, miou,
            pixel_accuracy; class datasets: miou and pixel_accuracy of the dataset-level protocol, plus
            ``miou_per_image``), the mean number of segments (token level) and of per-image thresholds
            (``tau``), and ``num_images``.
        per_image: method name -> one dict per image (name, its scores, segments, tau).
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
    num_classes: int | None = None,
    progress: bool = True,
) -> EvalResult:
    """Score ``methods`` on ``dataset`` from the backbone outputs cached in ``cache_dir``.

    Args:
        dataset: items ``dict(image, gt, name)`` with ``gt`` a list of ``(H, W)`` region maps (``BSDS500``)
            or one ``(H, W)`` class map with 255 on ignored pixels (``COCOStuff27``, ``Cityscapes27``,
            ``ImageFolderWithLabels``).
        cache_dir: filled by ``build_cache`` for the same dataset.
        methods: ``Method`` objects or their names (``parse_method``).
        device: where graphs, cuts, upsampling and contingency tables are computed.
        upsample: ``upsample_labels`` mode: "concept" (default: cosine to each segment's mean backbone
            feature), "nearest" or "majority".
        min_size, max_depth: of ``recursive_ncut`` (and of the diffcut baseline), for every method.
        chunk_size: images of one size processed together (memory: about ``chunk * N^2 * 4`` bytes a graph).
        examples: image names whose pixel labels are kept in ``EvalResult.examples`` (for figures).
        spec: when given, every cached item must carry its key (guards against a mixed-up cache folder).
        num_classes: classes of a class-map dataset (default: ``infer_num_classes(dataset)``).
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
    names = [item_name(dataset, i) for i in range(len(dataset))]
    missing = [n for n in names if not cache_file(cache_dir, n).is_file()]
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
    classes = None
    if len(dataset) and not isinstance(dataset[0]["gt"], (list, tuple)):
        classes = num_classes or infer_num_classes(dataset)
    scorer = _Scorer(upsample, set(examples), timing, device, classes)
    bar = progress_bar(len(names), "evaluate", progress)
    for (grid, size), indices in groups.items():
        for start in range(0, len(indices), chunk_size):
            chunk = indices[start : start + chunk_size]
            with _Timer(timing, "load", device):
                items = [load_cached(cache_dir, names[i]) for i in chunk]
                P = torch.stack([it["attention"] for it in items]).to(device=device, dtype=torch.float32)
                P = P / P.sum(-1, keepdim=True)  # float16 storage leaves rows off 1 by ~1e-4
                F = torch.stack([it["features"] for it in items]).to(device=device, dtype=torch.float32)
                data = [dataset[i] for i in chunk]
                gts = [d["gt"].to(device) if classes else GroundTruth.from_maps(d["gt"], device) for d in data]
            labels, taus = _segment_chunk(P, F, methods, min_size, max_depth, timing, device)
            for m in methods:
                per_image[m.name] += scorer(m.name, labels[m.name], taus[m.name], F, grid, size, gts, data)
            bar.update(len(chunk))
    bar.close()

    summary = {}
    for m in methods:
        rows = per_image[m.name]
        if classes:
            total = scorer.totals[m.name].compute()
            row = {"miou": total["mIoU"], "pixel_accuracy": total["pixel_accuracy"],
                   "miou_per_image": float(np.nanmean([r["miou"] for r in rows]))}
        else:
            row = {k: float(np.mean([r[k] for r in rows])) for k in REGION_SCORES}
        row.update({k: float(np.mean([r[k] for r in rows])) for k in ("segments", "tau")})
        summary[m.name] = {**row, "num_images": len(rows)}
    return EvalResult(summary=summary, per_image=per_image, timing=timing, examples=scorer.shown)


def _segment_chunk(P: Tensor, F: Tensor, methods: list[Method], min_size: int, max_depth: int,
                   timing: dict, device) -> tuple[dict, dict]:
    """Token labels ``(B, N)`` and per-image thresholds ``(B,)`` of every method on one chunk."""
    from diffcut_gpu.baselines import diffcut_style_ncut, kmeans_segments
    from diffcut_gpu.modules import RWNCut
    from diffcut_gpu.spectral import power_walk

    wanted: dict[tuple, set] = defaultdict(set)  # graph -> thresholds our recursion must answer
    for m in methods:
        if m.kind != "diffcut":
            wanted[m.graph()].add(m.threshold)
    graphs: dict[tuple, Tensor] = {}
    walks: dict[int, Tensor] = {}
    with _Timer(timing, "graph", device):
        for key in {*wanted, *(m.graph() for m in methods)}:
            if key[0] == "attention":  # the walk P^k is kept for kmeans on the attention rows
                walks[key[1]] = power_walk(P, key[1]) if key[1] > 1 else P
                graphs[key] = RWNCut(source="attention").build_graph(walks[key[1]])[0]
            else:
                graphs[key] = RWNCut(source="features", alpha=key[1]).build_graph(F)[0]
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

    def __init__(self, upsample: str, keep: set, timing: dict, device, classes: int | None) -> None:
        self.upsample, self.keep, self.timing, self.device = upsample, keep, timing, device
        self.classes = classes  # None: region maps (BSDS500); else the class count of a class-map dataset
        self.memo: dict = {}  # (image name, labels digest) -> (scores, pixel labels or None)
        self.shown: dict = {}
        self.totals: dict[str, HungarianMIoU] = defaultdict(lambda: HungarianMIoU(classes or 1))

    def _score(self, pred: Tensor, gt) -> dict:
        if self.classes:
            return class_counts(pred, gt, self.classes)
        return region_scores(pred, gt)

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
                    self.memo[keys[b]] = (self._score(pixels[j], gts[b]), kept)
        rows = []
        for b, k in enumerate(keys):
            scores, pix = self.memo[k]
            if self.classes:
                self.totals[name].add_counts(*scores["counts"])
                scores = {key: value for key, value in scores.items() if key != "counts"}
            rows.append({"name": data[b]["name"], **scores, "segments": int(torch.unique(labels[b]).numel()),
                         "tau": float(taus[b])})
            if wanted[b]:
                gt = data[b]["gt"] if self.classes else data[b]["gt"][0]
                first = {"image": data[b]["image"], "gt": gt, "pred": {}}
                ex = self.shown.setdefault(data[b]["name"], first)
                ex["pred"][name] = pix
        return rows


class _Timer:
    """Adds the wall time of a ``with`` block (device synchronised) to ``timing[stage]``."""

    def __init__(self, timing: dict, stage: str, device) -> None:
        self.timing, self.stage, self.device = timing, stage, device

    def __enter__(self) -> None:
        sync(self.device)
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        sync(self.device)
        self.timing[self.stage] += time.perf_counter() - self.start
