"""``diffcut-gpu eval --dataset NAME --root DIR --model-path DIR --out DIR``: score methods on a dataset.

Datasets (``--root`` in the layout each reader documents, see docs/evaluation.md): ``bsds500``
(covering, PRI, VI and Hungarian mIoU against every annotator), ``coco-stuff-27`` (the curated val list),
``cityscapes`` (27 classes) and ``folder`` (``<root>/images`` and ``<root>/labels`` with class-id PNGs);
the class datasets report the unsupervised protocol's mIoU and pixel accuracy (per-image Hungarian
matching, counts summed over the dataset). Backbones: ``vit`` (a transformers checkpoint folder) or
``diffusion`` (a diffusers pipeline folder). The backbone runs once per image and its outputs are cached
(``--cache-dir``, default ``outputs/cache/<model>-<resolution>/<split>``); every method is then scored
from the cache. Writes ``metrics.json`` (scores, per-image scores, timing), ``results.md`` (the table,
also printed) and ``examples.png`` (example segmentations next to the ground truth). Exit code: 0 done,
2 usage or setup error (missing dataset or model, bad method).

Methods are ``kind[:key=value,...]`` with kind ``rwncut`` (our recursion on the reversible attention walk
``P^k``), ``features`` (our recursion on DiffCut's feature graph), ``kmeans`` (k-means on the attention
rows with the RW-NCut segment count) or ``diffcut`` (DiffCut's per-node recursion; numeric threshold).
``--threshold`` and ``--power`` take comma-separated lists and fill the keys a method does not set, so
``--methods rwncut --threshold 0.3,0.5,dynamic --power 1,2`` scores six variants.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from diffcut_gpu.eval.backbone_cache import BACKBONES

from .options import positive_int as _positive
from .summary import EXIT_OK, EXIT_USAGE

__all__ = ["add_parser", "results_table", "run"]

COLUMNS = (("covering", "covering"), ("pri", "PRI"), ("vi", "VI"), ("miou", "mIoU"),
           ("pixel_accuracy", "pixel acc."), ("miou_per_image", "mIoU (image mean)"), ("segments", "segments"),
           ("tau", "tau (mean)"))
DATASETS = ("bsds500", "coco-stuff-27", "cityscapes", "folder")


def _csv(kind):
    def parse(text: str) -> list:
        try:
            return [kind(p.strip()) for p in text.split(",") if p.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated values, got {text!r}") from None
    return parse


def _threshold(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``eval`` on the ``diffcut-gpu`` sub-command parsers."""
    p = subparsers.add_parser(
        "eval",
        help="score segmentation methods on BSDS500, COCO-Stuff-27, Cityscapes-27 or a label folder",
        description=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", choices=DATASETS, default="bsds500", help="dataset (default: bsds500)")
    p.add_argument("--root", required=True, metavar="DIR", help="dataset folder, e.g. ../shared/data/bsds500")
    p.add_argument("--num-classes", type=_positive, metavar="C",
                   help="folder dataset: number of classes (default: 1 + the largest label id)")
    p.add_argument("--split", choices=("train", "val", "test"), default="val", help="split (default: val)")
    p.add_argument("--limit", type=_positive, metavar="N", help="first N images only")
    p.add_argument("--backbone", choices=BACKBONES, default="vit", help="attention source (default: vit)")
    p.add_argument("--model-path", required=True, metavar="DIR",
                   help="vit: a transformers checkpoint folder, e.g. ../shared/models/dinov2-small; "
                   "diffusion: a diffusers pipeline folder (unet/, vae/, text_encoder/ ...)")
    p.add_argument("--layers", type=_csv(int), default=[-4, -3, -2, -1],
                   help="vit: attention layers averaged (default: -4,-3,-2,-1)")
    p.add_argument("--resolution", type=_positive, metavar="PIXELS",
                   help="short side fed to the backbone (default: the image size, rounded to the patch "
                   "or the VAE x UNet stride)")
    p.add_argument("--methods", nargs="+", default=["rwncut", "features", "kmeans"], metavar="METHOD",
                   help="kind[:key=value,...] (default: rwncut features kmeans)")
    p.add_argument("--threshold", type=_csv(_threshold), default=["dynamic"],
                   help="comma-separated taus and/or policies, for methods that set none (default: dynamic)")
    p.add_argument("--power", type=_csv(int), default=[1], help="comma-separated walk powers k (default: 1)")
    p.add_argument("--min-size", type=_positive, default=4, metavar="TOKENS", help="smallest segment side")
    p.add_argument("--max-depth", type=_positive, default=8, help="deepest recursion level")
    p.add_argument("--upsample", choices=("concept", "nearest", "majority"), default="concept",
                   help="token labels to pixels (default: concept, with the backbone features)")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--batch-size", type=_positive, default=8, help="images per backbone batch")
    p.add_argument("--chunk-size", type=_positive, default=16, help="images per graph batch")
    p.add_argument("--cache-dir", metavar="DIR", help="backbone output cache (default: outputs/cache/...)")
    p.add_argument("--examples", type=int, default=4, metavar="N", help="images in examples.png (0: none)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder (created)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    p.set_defaults(_run=run)
    return p


def _methods(args: argparse.Namespace) -> list:
    from diffcut_gpu.eval.methods import parse_method

    out = []
    for text in args.methods:
        for t in args.threshold:
            for k in args.power:
                out.append(parse_method(text, threshold=t, power=k))
    return list(dict.fromkeys(out))


def results_table(summary: dict) -> str:
    """Markdown table of ``EvalResult.summary``: one row per method, the columns its dataset has."""
    columns = [(k, title) for k, title in COLUMNS if all(k in row for row in summary.values())]
    head = "| method | " + " | ".join(title for _, title in columns) + " |"
    lines = [head, "|---|" + "---:|" * len(columns)]
    for name, row in summary.items():
        lines.append(f"| `{name}` | " + " | ".join(f"{row[k]:.3f}" for k, _ in columns) + " |")
    return "\n".join(lines)


def load_dataset(name: str, root: str, split: str, limit: int | None):
    """The reader of ``--dataset`` on ``root`` (raises ``FileNotFoundError`` / ``ValueError`` on bad input)."""
    from diffcut_gpu.eval import BSDS500, Cityscapes27, COCOStuff27, ImageFolderWithLabels

    if name == "bsds500":
        return BSDS500(root, split, limit=limit)
    if name == "coco-stuff-27":
        return COCOStuff27(root, split, curated=True, limit=limit)
    if name == "cityscapes":
        return Cityscapes27(root, split, limit=limit)
    if name == "folder":
        return ImageFolderWithLabels(Path(root) / "images", Path(root) / "labels", limit=limit)
    raise ValueError(f"--dataset: expected one of {DATASETS}, got {name!r}")


def run(args: argparse.Namespace) -> int:
    """Build the cache, evaluate, write metrics.json, results.md and examples.png; return the exit code."""
    from diffcut_gpu.eval.backbone_cache import BackboneSpec, build_cache, default_cache_dir
    from diffcut_gpu.eval.runner import evaluate

    def fail(message: str) -> int:
        print(f"diffcut-gpu eval: error: {message}", file=sys.stderr)
        return EXIT_USAGE

    try:
        methods = _methods(args)
        dataset = load_dataset(args.dataset, args.root, args.split, args.limit)
        spec = BackboneSpec(str(Path(args.model_path).expanduser()), tuple(args.layers), args.resolution,
                            args.backbone)
        spec.check(arg="--model-path")
    except (ValueError, FileNotFoundError) as err:
        return fail(str(err))
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cache_dir = Path(args.cache_dir) if args.cache_dir else default_cache_dir(spec, args.split)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    try:
        cache = build_cache(dataset, spec, cache_dir, device=device, batch_size=args.batch_size,
                            progress=not args.quiet)
    except (ValueError, FileNotFoundError, OSError, ImportError) as err:
        return fail(str(err))
    names = [dataset[i]["name"] for i in range(min(args.examples, len(dataset)))] if args.examples > 0 else []
    result = evaluate(dataset, cache_dir, methods, device=device, upsample=args.upsample,
                      min_size=args.min_size, max_depth=args.max_depth, chunk_size=args.chunk_size,
                      examples=names, spec=spec, num_classes=args.num_classes, progress=not args.quiet)
    result.timing["backbone"] = cache["backbone_s"]
    result.timing["total"] = time.perf_counter() - start

    payload = {
        "config": {k: v for k, v in vars(args).items() if not k.startswith("_")},
        "backbone": spec.key(),
        "cache": {"dir": str(cache_dir), **cache},
        "device": device,
        **result.to_json(),
    }
    (out / "metrics.json").write_text(json.dumps(payload, indent=2, default=str))
    table = results_table(result.summary)
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in result.timing.items())
    (out / "results.md").write_text(
        f"# {args.dataset} {args.split}: {len(dataset)} images\n\n{table}\n\nTiming: {timing}\n"
    )
    print(table)
    print(f"timing: {timing}")
    if names:
        from diffcut_gpu.eval.figures import plot_examples

        plot_examples(result.examples, [m.name for m in methods], out / "examples.png")
    figure = f", {out / 'examples.png'}" if names else ""
    print(f"wrote {out / 'metrics.json'}, {out / 'results.md'}{figure}")
    return EXIT_OK
