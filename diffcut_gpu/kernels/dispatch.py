"""The one place that chooses between the torch reference path and the CUDA kernels.

``select_backend(tensor, override)`` returns ``"torch"`` or ``"cuda"``. The request comes from the
``override`` argument, else from the environment variable ``DIFFCUT_GPU_BACKEND``, else ``"auto"``:

* ``"torch"``: always the torch path.
* ``"cuda"``: the CUDA kernels; the tensor must live on a CUDA device and CuPy must be importable and
  built for the same CUDA major version as torch, otherwise a ``ValueError`` / ``ImportError`` says
  what to change.
* ``"auto"``: the torch path, except for CUDA tensors of a kernel dtype (float32, float16, bfloat16)
  once ``KERNELS_VALIDATED`` is True and CuPy is usable. If CuPy is missing there, it warns once and
  falls back to torch.

``KERNELS_VALIDATED`` is False: the kernels in ``csrc/`` were written and compile-checked without a
GPU, and nothing has run them yet. A session with a GPU runs ``pytest tests/gpu -q``; once the whole
suite passes there it sets ``KERNELS_VALIDATED = True`` below (and records the card, driver and CuPy
version in docs/kernels.md). Until then ``"auto"`` never picks the kernels; ``"cuda"`` still forces them.
"""

from __future__ import annotations

import os
import warnings
from typing import Literal

import torch
from torch import Tensor

__all__ = ["BACKENDS", "ENV_VAR", "KERNELS_VALIDATED", "cupy_status", "requested_backend", "select_backend"]

KERNELS_VALIDATED = False
"""Flip to True only after ``pytest tests/gpu -q`` passes on a GPU (see the module docstring)."""

ENV_VAR = "DIFFCUT_GPU_BACKEND"
BACKENDS = ("auto", "torch", "cuda")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

Backend = Literal["torch", "cuda"]

_status: tuple[bool, str] | None = None
_warned = False


def _pip_hint() -> str:
    """The pip extra matching torch's CUDA build (cuda12 / cuda13)."""
    major = _torch_cuda_major()
    extra = f"cuda{major}" if major in (12, 13) else "cuda12"
    return f"pip install diffcut-gpu[{extra}]"


def _torch_cuda_major() -> int | None:
    version = torch.version.cuda
    return int(version.split(".")[0]) if version else None


def cupy_status() -> tuple[bool, str]:
    """(usable, reason): whether CuPy imports and targets torch's CUDA major version. Cached."""
    global _status
    if _status is None:
        _status = _probe_cupy()
    return _status


def _probe_cupy() -> tuple[bool, str]:
    try:
        import cupy
    except Exception as exc:  # ImportError, or a broken CUDA library underneath CuPy
        return False, f"CuPy is not importable ({type(exc).__name__}: {exc}); {_pip_hint()}"
    try:
        cupy_major = int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception as exc:
        return False, f"CuPy cannot reach the CUDA runtime ({type(exc).__name__}: {exc})"
    torch_major = _torch_cuda_major()
    if torch_major is not None and cupy_major != torch_major:
        return False, (
            f"CuPy is built for CUDA {cupy_major} but torch for CUDA {torch_major}; "
            f"uninstall that CuPy and {_pip_hint()}"
        )
    return True, "ok"


def requested_backend(override: str | None = None) -> str:
    """The requested mode: ``override`` if given, else ``$DIFFCUT_GPU_BACKEND``, else ``"auto"``."""
    if override is not None:
        name, value = "backend", override
    else:
        name, value = ENV_VAR, os.environ.get(ENV_VAR, "auto")
    if not isinstance(value, str) or value.strip().lower() not in BACKENDS:
        raise ValueError(f"{name}: expected one of {', '.join(BACKENDS)}, got {value!r}")
    return value.strip().lower()


def select_backend(tensor: Tensor, override: str | None = None) -> Backend:
    """Backend for an op whose main input is ``tensor``: ``"torch"`` or ``"cuda"``.

    Args:
        tensor: the op's main input (its device and dtype decide).
        override: ``"auto"``, ``"torch"``, ``"cuda"`` or None (then ``$DIFFCUT_GPU_BACKEND``, default auto).

    Raises:
        ValueError: unknown mode, or ``"cuda"`` requested for a tensor that is not on a CUDA device.
        ImportError: ``"cuda"`` requested but CuPy is missing or built for another CUDA major version.
    """
    if not isinstance(tensor, Tensor):
        raise TypeError(f"tensor: expected a torch.Tensor, got {type(tensor).__name__}")
    mode = requested_backend(override)
    if mode == "torch":
        return "torch"
    if mode == "cuda":
        if not tensor.is_cuda:
            raise ValueError(
                f"backend: expected a CUDA tensor for the 'cuda' backend, got a tensor on {tensor.device}; "
                "move it to the GPU or use backend='torch'"
            )
        usable, reason = cupy_status()
        if not usable:
            raise ImportError(f"backend: the 'cuda' backend needs CuPy: {reason}")
        return "cuda"
    return _auto(tensor.is_cuda, tensor.dtype)


def _auto(is_cuda: bool, dtype: torch.dtype) -> Backend:
    """The ``"auto"`` rule (separate so that it can be tested without a GPU)."""
    global _warned
    if not (is_cuda and KERNELS_VALIDATED and dtype in KERNEL_DTYPES):
        return "torch"
    usable, reason = cupy_status()
    if usable:
        return "cuda"
    if not _warned:
        _warned = True
        warnings.warn(
            f"diffcut-gpu: using the torch path on the GPU because {reason}", RuntimeWarning, stacklevel=3
        )
    return "torch"
