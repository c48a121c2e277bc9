"""One rank's work loop: decode images ahead of the model, batch them, segment, write outputs, log.

    files --(threads: read_image)--> RGB uint8 --(device: resize to processing size)--> batch (B, 3, h, w)
          --DiffCut--> labels (B, h, w) --(nearest)--> labels at each image's own size --> files + manifest

A bad file is reported and skipped; a batch that fails inside the model is retried one image at a time
so that the good images of that batch still finish; a failure while writing fails only that image.
Every outcome (done or failed) gets a manifest line after the outputs are in place; a manifest that
cannot be written (no space, read-only folder) is reported once and the images go on.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..eval.labels import resize_labels
from ..io import ImageReadError, InputItem, Manifest, output_paths, read_image, write_outputs
from ..models.vit import budget_size, target_size

__all__ = [
    "FAIL_AFTER_ENV",
    "FAIL_RANK_ENV",
    "PipelineConfig",
    "RankStats",
    "processing_size",
    "run_pipeline",
]

#: Test hook: a rank exits hard (``os._exit(3)``) after finishing this many images (see docs/cli.md).
FAIL_AFTER_ENV = "DIFFCUT_GPU_TEST_FAIL_AFTER"
#: Test hook: only this rank obeys ``DIFFCUT_GPU_TEST_FAIL_AFTER`` (default: every rank).
FAIL_RANK_ENV = "DIFFCUT_GPU_TEST_FAIL_RANK"


@dataclass
class PipelineConfig:
    """How one rank turns files into outputs (everything but the model)."""

    out_dir: str
    formats: tuple[str, ...]
    resolution: int
    resize: str = "budget"  # "budget": about ``tokens`` tokens, aspect kept; "square": (R, R); "short": short side R
    tokens: int = 1024  # the token budget of resize="budget"
    multiple: int = 14  # processing sides are rounded to a multiple of this (patch size, VAE/UNet stride)
    batch_size: int = 1
    workers: int = 2
    max_pixels: int | None = None
    min_side: int = 1
    fsync: bool = True
    options: dict = field(default_factory=dict)  # recorded in every JSON output and manifest line
    run_id: str = ""


@dataclass
class RankStats:
    """What one rank did: images finished, failures with reasons, time spent."""

    rank: int = 0
    done: int = 0
    failed: list[dict] = field(default_factory=list)  # {"source", "key", "reason"}
    seconds: float = 0.0
    run_errors: list[str] = field(default_factory=list)  # run-level files that could not be written


def processing_size(
    height: int, width: int, resolution: int, resize: str, multiple: int, tokens: int = 1024
) -> tuple[int, int]:
    """``(h, w)`` to segment at: about ``tokens`` cells of ``multiple`` pixels with the aspect kept
    ("budget"), ``(R, R)`` ("square") or short side ``R`` ("short"); sides are multiples of ``multiple``.

    The rounding of "square" and "short" is ``models.vit.target_size``'s (nearest multiple, halves up, at
    least one multiple); "budget" is ``models.vit.budget_size``.
    """
    if resize == "budget":
        return budget_size(int(height), int(width), int(multiple), int(tokens))
    if resize == "square":
        return target_size(height, width, multiple, (resolution, resolution))
    if resize == "short":
        return target_size(height, width, multiple, resolution)
    raise ValueError(f"resize: expected 'budget', 'square' or 'short', got {resize!r}")


def _read(item: InputItem, config: PipelineConfig) -> np.ndarray | ImageReadError:
    try:
        return read_image(item.source, max_pixels=config.max_pixels, min_side=config.min_side)
    except ImageReadError as err:
        return err
    except Exception as err:  # a reader bug must not stop the batch either
        return ImageReadError(f"unexpected error while reading ({type(err).__name__}: {err})")


def _decoded(
    items: Sequence[InputItem], config: PipelineConfig
) -> Iterator[tuple[InputItem, np.ndarray | ImageReadError]]:
    """``(item, RGB array or error)`` in order, decoded by ``config.workers`` threads ahead of use."""
    if config.workers <= 0:
        for item in items:
            yield item, _read(item, config)
        return
    lookahead = max(2 * config.workers, config.batch_size + config.workers)
    with ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="diffcut-read") as pool:
        pending = iter(items)
        window: deque = deque()
        for item in pending:
            window.append((item, pool.submit(_read, item, config)))
            if len(window) >= lookahead:
                break
        while window:
            item, future = window.popleft()
            nxt = next(pending, None)
            if nxt is not None:
                window.append((nxt, pool.submit(_read, nxt, config)))
            yield item, future.result()


def _batches(
    decoded: Iterable[tuple[InputItem, np.ndarray | ImageReadError]],
    config: PipelineConfig,
    on_error: Callable[[InputItem, str], None],
) -> Iterator[list[tuple[InputItem, np.ndarray]]]:
    """Consecutive readable images grouped by processing size, at most ``batch_size`` per group."""
    batch: list[tuple[InputItem, np.ndarray]] = []
    size = None
    for item, rgb in decoded:
        if isinstance(rgb, ImageReadError):
            on_error(item, str(rgb))
            continue
        this = processing_size(rgb.shape[0], rgb.shape[1], config.resolution, config.resize, config.multiple,
                               config.tokens)
        if batch and (this != size or len(batch) >= config.batch_size):
            yield batch
            batch = []
        batch.append((item, rgb))
        size = this
    if batch:
        yield batch


@torch.no_grad()
def _segment(
    model: nn.Module, rgbs: list[np.ndarray], config: PipelineConfig, device: torch.device
) -> list[dict]:
    """Segment a batch of same-processing-size images; per image: labels at its own size + JSON fields.

    Token labels go to each original size in one step (``_labels_at``), not through the processing size."""
    h0, w0 = rgbs[0].shape[:2]
    size = processing_size(h0, w0, config.resolution, config.resize, config.multiple, config.tokens)
    pixels = []
    for rgb in rgbs:
        x = torch.from_numpy(rgb).to(device).permute(2, 0, 1).unsqueeze(0).float().div_(255)
        if tuple(x.shape[-2:]) != size:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True).clamp_(0, 1)
        pixels.append(x)
    out = model(torch.cat(pixels))
    seg = out.segmentation
    labels = out.labels.cpu().numpy()
    if labels.size and labels.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"labels: expected at most 65536 segments for 16-bit files, got {labels.max() + 1}")
    results = []
    for b, rgb in enumerate(rgbs):
        results.append({
            "labels": _labels_at(out, labels, b, rgb.shape[:2]),
            "threshold": float(seg.thresholds[b]),
            "num_segments": int(seg.num_segments[b]),
            "processing_size": list(size),
            "token_grid": list(out.token_labels.shape[-2:]),
            "tree": seg.image_tree(b),
        })
    return results


def _labels_at(out, labels: np.ndarray, b: int, size: tuple[int, int]) -> np.ndarray:
    """Image ``b``'s labels at its original ``size``: its token labels upsampled there in one step by the
    model's own rule (concept or nearest), so the aspect ratio and boundaries are not squashed through the
    processing size. A model output without a re-cuttable result, or with PAMR refinement (which needs the
    processed image), falls back to nearest-resizing the processing-size labels (on the host: no device
    memory for a huge image)."""
    cut = getattr(out, "cut", None)
    if cut is None or cut.refine or tuple(labels.shape[-2:]) == tuple(size):
        return resize_labels(labels[b].astype(np.uint16), size)
    from ..upsample import upsample_labels

    feats = None if cut.features is None else cut.features[b : b + 1]
    mode = cut.upsample if feats is not None else "nearest"
    up = upsample_labels(cut.token_labels[b : b + 1], tuple(size), mode=mode, features=feats)
    return up[0].cpu().numpy().astype(np.uint16)


def _reason(err: BaseException) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _fail_hook(rank: int) -> int | None:
    after = os.environ.get(FAIL_AFTER_ENV)
    only = os.environ.get(FAIL_RANK_ENV)
    if not after or (only not in (None, "") and int(only) != rank):
        return None
    return int(after)


def run_pipeline(
    model: nn.Module,
    items: Sequence[InputItem],
    config: PipelineConfig,
    *,
    device: torch.device,
    manifest: Manifest,
    rank: int = 0,
    log: Callable[[str], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> RankStats:
    """Segment ``items`` with ``model`` (a ``DiffCut``) and write their outputs; never raises for bad images.

    Args:
        model: maps images ``(B, 3, h, w)`` in [0, 1] on ``device`` to a ``DiffCutOutput``.
        items: this rank's inputs, in order.
        config: sizes, formats, batching, where outputs go.
        manifest: receives one line per image, after its outputs are written (`Manifest.try_append`: a
            failed manifest write is logged once and left in ``manifest.error``; it fails no image).
        log: called with one line per failure (default: stderr).
        progress: called with the number of images just finished (done or failed).
    """
    log = log or (lambda line: print(line, file=sys.stderr))
    stats = RankStats(rank=rank)
    fail_after = _fail_hook(rank)
    start = time.perf_counter()

    def finish(item: InputItem, status: str, reason: str | None = None) -> None:
        line = {"key": item.key, "source": item.source, "status": status, "rank": rank, "run": config.run_id,
                "time": round(time.time(), 3)}
        if reason is not None:
            line["reason"] = reason
            stats.failed.append({"source": item.source, "key": item.key, "reason": reason})
            log(f"failed: {item.source}: {reason}")
        else:
            stats.done += 1
        if not manifest.try_append(line) and not stats.run_errors:
            stats.run_errors.append(str(manifest.error))
            log(f"error: {manifest.error}; outputs are still written, a re-run re-checks them")
        if progress is not None:
            progress(1)
        if fail_after is not None and stats.done + len(stats.failed) >= fail_after:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(3)  # test hook: die like a killed worker, without cleanup

    def write(item: InputItem, rgb: np.ndarray, result: dict) -> None:
        record = {
            "source": item.source,
            "key": item.key,
            "image_size": list(rgb.shape[:2]),
            "processing_size": result["processing_size"],
            "token_grid": result["token_grid"],
            "num_segments": result["num_segments"],
            "threshold": result["threshold"],
            "options": config.options,
            "tree": result["tree"],
        }
        try:
            paths = output_paths(config.out_dir, item.key, config.formats)
            write_outputs(paths, rgb, result["labels"], record, fsync=config.fsync)
        except Exception as err:
            finish(item, "failed", f"could not write outputs ({_reason(err)})")
            return
        finish(item, "done")

    def segment_all(batch: list[tuple[InputItem, np.ndarray]]) -> None:
        try:
            results = _segment(model, [rgb for _, rgb in batch], config, device)
        except Exception as err:
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1:
                finish(batch[0][0], "failed", f"model error ({_reason(err)})")
                return
            log(f"warning: a batch of {len(batch)} failed in the model ({_reason(err)}); "
                "retrying one image at a time")
            for one in batch:
                segment_all([one])
            return
        for (item, rgb), result in zip(batch, results):
            write(item, rgb, result)

    for batch in _batches(_decoded(items, config), config, lambda item, why: finish(item, "failed", why)):
        segment_all(batch)
    stats.seconds = time.perf_counter() - start
    return stats
