"""``diffcut-gpu segment PATHS... --out DIR``: segment image files into overlays, label maps and hierarchies.

Reference: docs/cli.md. Under ``torchrun`` every rank runs this same function on its own shard
(docs/distributed.md).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import uuid
from pathlib import Path

import torch
from torch import nn

from .._threads import set_threads
from ..io import DEFAULT_MAX_PIXELS, DEFAULT_MIN_SIDE, Manifest, discover_inputs
from ..models._loading import first_line
from .distributed import DistContext, init_distributed
from .options import (
    DEFAULT_MODEL,
    DEFAULT_RESOLUTION,
    DTYPE_HELP,
    THREADS_HELP,
    THRESHOLD_NAMES,
    diffcut_kwargs,
    dtype_arg,
    formats_arg,
    non_negative_int,
    positive_int,
    threads_arg,
    threshold_arg,
    torch_dtype,
)
from .pipeline import PipelineConfig, RankStats, run_pipeline
from .plan import plan_work
from .summary import EXIT_USAGE, build_summary, print_summary, write_summary

__all__ = ["SetupError", "add_parser", "check_options", "load_model", "run"]


class SetupError(Exception):
    """A problem with the options, the model or the output folder: reported in one line, exit code 2."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``segment`` on the ``diffcut-gpu`` sub-command parsers."""
    p = subparsers.add_parser(
        "segment",
        help="segment images (files, folders, globs) into overlays, label maps and hierarchies",
        description="Segment images with DiffCut (recursive random-walk NCut on self-attention). "
        "Re-running skips images whose outputs exist and are whole. Exit code: 0 all done, 1 some images "
        "failed or the manifest/summary could not be written (finished outputs are kept), 2 usage or setup "
        "error. Under torchrun, each process takes a shard.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders or glob patterns")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--recursive", "-r", action="store_true",
                   help="descend into sub-folders (and let ** in globs match any depth)")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="process only the first N inputs (in sorted order)")

    m = p.add_argument_group("model")
    m.add_argument("--backbone", choices=("diffusion", "vit"), default="diffusion",
                   help="attention source: a Stable Diffusion UNet or a ViT (default: diffusion)")
    m.add_argument("--model-path", "--model", dest="model", metavar="NAME_OR_DIR",
                   help=f"hub name or local snapshot folder (default: {DEFAULT_MODEL['diffusion']} for "
                   f"diffusion, {DEFAULT_MODEL['vit']} for vit)")
    m.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available; cuda:LOCAL_RANK "
                   "under torchrun)")
    m.add_argument("--dtype", type=dtype_arg, default="auto", help=DTYPE_HELP)
    m.add_argument("--threads", type=threads_arg, default=None, metavar="N", help=THREADS_HELP)
    m.add_argument("--resolution", type=positive_int, metavar="PIXELS",
                   help="processing size for --resize square/short (default: 448 for vit, 1024 for diffusion)")
    m.add_argument("--resize", choices=("budget", "square", "short"), default=None,
                   help="budget: about --tokens tokens, aspect kept; square: RESxRES; short: short side to RES, "
                   "aspect kept (default: budget, or square when --resolution is given)")
    m.add_argument("--tokens", type=positive_int, default=1024, metavar="N",
                   help="token budget of --resize budget (default: 1024, a 32x32 grid)")
    m.add_argument("--batch-size", "-b", type=positive_int, default=1, metavar="B", help="images per batch")

    c = p.add_argument_group("segmentation (DiffCut arguments)")
    c.add_argument("--threshold", type=threshold_arg, default="dynamic",
                   help=f"NCut threshold: a number or one of {', '.join(THRESHOLD_NAMES)} (default: dynamic)")
    c.add_argument("--segments", type=positive_int, default=None, metavar="K",
                   help="cut the hierarchy into exactly K segments (lowest NCut first) instead of --threshold")
    c.add_argument("--power", type=positive_int, default=1, metavar="K", help="random-walk power P^k")
    c.add_argument("--source", choices=("attention", "features", "both"), default="attention",
                   help="graph to cut (default: attention)")
    c.add_argument("--min-size", type=positive_int, default=4, metavar="TOKENS",
                   help="smallest segment that may be split, in tokens")
    c.add_argument("--max-depth", type=positive_int, default=8, help="deepest level of the recursion")
    c.add_argument("--upsample", choices=("concept", "nearest"), default="concept",
                   help="token labels to pixels (default: concept)")
    c.add_argument("--refine", action="store_true", help="refine pixel labels with PAMR")
    c.add_argument("--backend", choices=("auto", "torch", "cuda"), default=None,
                   help="solver kernels: auto, torch or cuda (default: $DIFFCUT_GPU_BACKEND, else auto)")

    o = p.add_argument_group("outputs and input handling")
    o.add_argument("--formats", type=formats_arg, default=("overlay", "png16", "json"),
                   help="comma-separated outputs among overlay,png16,npy,json (default: overlay,png16,json)")
    o.add_argument("--overwrite", action="store_true", help="redo images whose outputs exist")
    o.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse larger images before decoding (default: {DEFAULT_MAX_PIXELS})")
    o.add_argument("--min-side", type=positive_int, default=DEFAULT_MIN_SIDE, metavar="PIXELS",
                   help=f"refuse images with a shorter side (default: {DEFAULT_MIN_SIDE})")
    o.add_argument("--workers", type=non_negative_int, default=2, help="image-decoding threads per process")
    o.add_argument("--no-fsync", dest="fsync", action="store_false",
                   help="do not fsync each output (faster on network file systems, less crash-safe)")
    o.add_argument("--dist-timeout", type=positive_int, default=3600, metavar="SECONDS",
                   help="under torchrun: how long ranks wait for each other at the end")
    o.add_argument("--quiet", "-q", action="store_true", help="no progress bar; only failures and errors")
    return p


def _size_multiple(model: nn.Module, backbone: str) -> int:
    """Processing sides must be multiples of the backbone's ``size_multiple`` (ViT: the patch size;
    diffusion: the VAE downsampling times the UNet stride)."""
    multiple = getattr(getattr(model, "backbone", model), "size_multiple", None)
    return int(multiple) if multiple else (64 if backbone == "diffusion" else 14)


def _check_resolution(resolution: int, multiple: int) -> None:
    """A processing size under two tokens per side leaves nothing to cut: a usage error, not N failures."""
    least = 2 * multiple
    if resolution < least:
        raise SetupError(
            f"--resolution: expected at least {least} pixels for this model (sides are rounded to multiples "
            f"of its {multiple}-pixel patch or stride, and a cut needs at least 2 x 2 tokens), got {resolution}"
        )


def _check_out_apart(paths: list[str], out: str) -> None:
    """``--out`` must not be an input folder, nor hold one: its files would be skipped as outputs."""
    out_real = Path(os.path.realpath(out))
    for raw in paths:
        path = Path(os.path.expanduser(raw))
        if not path.is_dir():
            continue
        real = Path(os.path.realpath(path))
        if real == out_real:
            raise SetupError(
                f"--out: expected a folder apart from the inputs, got {out!r}, which is the input folder "
                f"{raw!r}; write the outputs elsewhere, e.g. --out {raw.rstrip('/')}-segments"
            )
        if real.is_relative_to(out_real):
            raise SetupError(
                f"PATH: the input folder {raw!r} lies inside the output folder --out {out!r}, whose files are "
                "never taken as inputs; choose an --out outside it"
            )


def _quiet_hub(backbone: str) -> None:
    """Silence the Hugging Face download / weight-loading progress bars (``--quiet``)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("transformers",) + (("diffusers",) if backbone == "diffusion" else ()):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # reported by the loader, with the pip extra to install
        logging = getattr(getattr(module, "utils", None), "logging", None)
        if logging is not None and hasattr(logging, "disable_progress_bar"):
            logging.disable_progress_bar()


def load_model(args: argparse.Namespace, device: torch.device) -> nn.Module:
    """``DiffCut.from_pretrained`` with the options; any loading problem becomes a one-line `SetupError`."""
    from ..modules import DiffCut

    if args.quiet:
        _quiet_hub(args.backbone)

    name = args.model or DEFAULT_MODEL[args.backbone]
    try:
        return DiffCut.from_pretrained(  # the pipeline resizes (--resize): the backbone keeps its input size
            name, backbone=args.backbone, device=device, dtype=torch_dtype(args.dtype),
            backbone_kwargs={"token_budget": None} if args.backbone == "vit" else None, **diffcut_kwargs(args)
        ).eval()
    except ImportError as err:
        raise SetupError(str(err)) from None
    except (OSError, ValueError, RuntimeError, KeyError) as err:
        first = first_line(err).removeprefix("name_or_path: ")
        if "could not load" not in first:
            first = f"could not load the {args.backbone} model '{name}': {first}"
        if not os.path.exists(os.path.expanduser(name)) and "HF_HUB_OFFLINE" not in first:
            # a hub name: the one case where fetching elsewhere is the answer (never for a local path)
            first += ("; without network access pass a local snapshot folder with --model-path "
                      "and set HF_HUB_OFFLINE=1")
        raise SetupError(f"--model-path: {first}") from None


def check_options(args: argparse.Namespace) -> None:
    """Build ``DiffCut`` around a stand-in backbone, so bad arguments fail before any file or model work."""
    from ..modules import DiffCut

    try:
        DiffCut(nn.Identity(), **diffcut_kwargs(args))
    except (ValueError, TypeError) as err:
        raise SetupError(str(err)) from None


def _prepare_out_dir(out: str) -> None:
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as err:
        raise SetupError(f"--out: expected a folder that can be created, got {out!r} ({err.strerror})") \
            from None
    if not os.path.isdir(out) or not os.access(out, os.W_OK | os.X_OK):
        raise SetupError(f"--out: expected a writable folder, got {out!r}")


def _segment(args: argparse.Namespace, dist: DistContext) -> int:
    start = time.time()
    check_options(args)
    _check_out_apart(args.paths, args.out)
    threads = set_threads(getattr(args, "threads", None))
    _prepare_out_dir(args.out)
    found = discover_inputs(args.paths, recursive=args.recursive, limit=args.limit, out_dir=args.out)
    if not found.items and not found.missing:
        raise SetupError(f"PATH: expected image files, folders or globs, found no images in {args.paths}")
    run_id = dist.all_gather(uuid.uuid4().hex[:12])[0]  # rank 0's id, shared
    manifest = Manifest(args.out, dist.rank, fsync=args.fsync)
    plan = plan_work(found.items, dist, out_dir=args.out, formats=args.formats, overwrite=args.overwrite,
                     manifest=manifest, run_id=run_id)
    resolution = args.resolution or DEFAULT_RESOLUTION[args.backbone]
    resize = args.resize or ("budget" if args.resolution is None else "square")
    options = {
        "backbone": args.backbone,
        "model": args.model or DEFAULT_MODEL[args.backbone],
        "resolution": resolution,
        "resize": resize,
        "tokens": args.tokens,
        "dtype": args.dtype,
        **diffcut_kwargs(args),
    }
    log = _log
    if not args.quiet and dist.is_main:
        log(f"{plan.total} inputs: {plan.skipped} already finished, {plan.pending} to do on "
            f"{dist.world_size} process(es) ({threads} backbone thread(s)); outputs in {args.out}")

    stats = RankStats(rank=dist.rank)
    if plan.mine:  # nothing to do (all finished): the model is not even loaded
        model = load_model(args, dist.device)
        multiple = _size_multiple(model, args.backbone)
        _check_resolution(resolution, multiple)
        config = PipelineConfig(
            out_dir=args.out, formats=args.formats, resolution=resolution, resize=resize, tokens=args.tokens,
            multiple=multiple, batch_size=args.batch_size, workers=args.workers,
            max_pixels=args.max_pixels, min_side=args.min_side, fsync=args.fsync, options=options,
            run_id=run_id,
        )
        bar = _progress_bar(len(plan.mine), dist, args.quiet)
        try:
            stats = run_pipeline(model, plan.mine, config, device=dist.device, manifest=manifest,
                                 rank=dist.rank, log=log, progress=bar.update if bar else None)
        finally:
            if bar is not None:
                bar.close()
    manifest.close()
    if manifest.error is not None and manifest.error not in stats.run_errors:
        stats.run_errors.append(manifest.error)  # from the plan's recovered lines or the last flush

    ranks = dist.all_gather(stats)  # waits (up to --dist-timeout) for the slowest rank
    dist.barrier()  # every rank has read the store: now any of them may leave
    summary = build_summary(ranks, total=plan.total, skipped=plan.skipped, missing=found.missing,
                            ignored=found.ignored, out_dir=args.out,
                            options={**options, "device": str(dist.device), "batch_size": args.batch_size},
                            elapsed=time.time() - start)
    if dist.is_main:
        path = write_summary(summary, args.out)
        if not args.quiet or summary["failed"] or summary["run_errors"]:
            print_summary(summary, path)
    return summary["exit_code"]


def _log(line: str) -> None:
    """One line to stderr that does not break a running progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def _progress_bar(total: int, dist: DistContext, quiet: bool):
    if quiet or not dist.is_main:
        return None
    from tqdm import tqdm

    desc = "segment" if dist.world_size == 1 else f"segment (rank 0 of {dist.world_size})"
    return tqdm(total=total, desc=desc, unit="img", file=sys.stderr, dynamic_ncols=True, smoothing=0.1)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``diffcut-gpu segment``: returns the exit code (0 ok, 1 some failed, 2 setup error)."""
    dist = None
    try:
        dist = init_distributed(args.device, timeout_s=args.dist_timeout)
        return _segment(args, dist)
    except (SetupError, ValueError) as err:
        print(f"diffcut-gpu segment: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if dist is not None:
            dist.close()
