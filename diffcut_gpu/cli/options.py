"""Command-line values -> the objects the Python API takes (``DiffCut`` kwargs, model kwargs).

Argument types raise ``argparse.ArgumentTypeError`` so that a bad value is a usage error (exit 2) with
the usual "argument --x: ..." message.
"""

from __future__ import annotations

import argparse

import torch

from ..io import FORMATS
from ..spectral import policy_names

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_RESOLUTION",
    "DTYPE_HELP",
    "THREADS_HELP",
    "THRESHOLD_NAMES",
    "diffcut_kwargs",
    "dtype_arg",
    "formats_arg",
    "positive_int",
    "threads_arg",
    "threshold_arg",
]

#: Policy names ``--threshold`` accepts: the registry of ``spectral.thresholds``, "dynamic" first.
THRESHOLD_NAMES = policy_names()
DEFAULT_RESOLUTION = {"vit": 448, "diffusion": 1024}
#: Model loaded when ``--model-path`` is not given (a hub name; offline, pass a local folder instead).
DEFAULT_MODEL = {"vit": "facebook/dinov2-small", "diffusion": "segmind/SSD-1B"}
_DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def threshold_arg(text: str) -> float | str:
    """``--threshold``: a number (constant tau) or a policy name (``dynamic``, ``logotsu``, ...)."""
    if text in THRESHOLD_NAMES:
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number or one of {', '.join(THRESHOLD_NAMES)}, got {text!r}"
        ) from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive NCut threshold, got {text}")
    return value


def formats_arg(text: str) -> tuple[str, ...]:
    """``--formats``: comma-separated subset of ``overlay,png16,npy,json`` (duplicates dropped)."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    bad = [p for p in parts if p not in FORMATS]
    if bad or not parts:
        raise argparse.ArgumentTypeError(
            f"expected a comma-separated subset of {','.join(FORMATS)}, got {text!r}"
        )
    return tuple(dict.fromkeys(parts))


def _int_at_least(text: str, minimum: int, expected: str) -> int:
    """``text`` as an int >= ``minimum``, else an argparse error saying ``expected``."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "a non-negative integer")


THREADS_HELP = (
    "torch threads for the backbone: a count, or 'auto' (default: the CPUs this process may use less the "
    "1-minute load average, at least 1, at most the physical cores). The spectral stage (graph, cuts, "
    "upsampling) always runs on 1 thread: its small operations only lose to thread wake-ups, badly so "
    "on a busy machine"
)


def threads_arg(text: str) -> int | None:
    """``--threads``: a positive count, or ``auto`` (None: ``diffcut_gpu._threads.auto_threads``)."""
    if text == "auto":
        return None
    return _int_at_least(text, 1, "a positive integer or 'auto'")


DTYPE_HELP = (
    "auto, float32, float16 or bfloat16 (auto: float16 for diffusion on CUDA, else the checkpoint's). "
    "On CPU, bfloat16 pays only where the CPU computes in bfloat16 natively (AVX512-BF16 or AMX); "
    "elsewhere it is several times slower (docs/benchmarks.md)"
)


def dtype_arg(text: str) -> str:
    if text not in _DTYPES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(_DTYPES)}, got {text!r}")
    return text


def torch_dtype(name: str) -> torch.dtype | None:
    """``--dtype`` name -> ``torch.dtype`` (``auto`` -> ``None``: the backbone's default)."""
    return _DTYPES[name]


def diffcut_kwargs(args: argparse.Namespace) -> dict:
    """The ``DiffCut(...)`` keyword arguments the options ask for."""
    return {
        "source": args.source,
        "power": args.power,
        "threshold": args.threshold,
        "segments": getattr(args, "segments", None),
        "min_size": args.min_size,
        "max_depth": args.max_depth,
        "upsample": args.upsample,
        "refine": args.refine,
        "backend": getattr(args, "backend", None),
    }
