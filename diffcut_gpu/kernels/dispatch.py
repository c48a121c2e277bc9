"""The one place that chooses an implementation for each heavy op: the torch path or a CUDA kernel.

``select(op, tensor, backend, n=..., batch=...)`` returns the implementation name for one of ``OPS``
(``"fiedler"``, ``"sweep"``, ``"gather"``, ``"renormalize"``, ``"attention"``); callers in
``spectral/`` and ``attention/`` run what it names and never look at devices themselves. The request
comes from the ``backend`` argument, else from the environment variable ``DIFFCUT_GPU_BACKEND``, else
``"auto"``:

* ``"torch"``: always the torch path.
* ``"cuda"``: the CUDA kernel; the tensor must live on a CUDA device, CuPy must be importable and built
  for the same CUDA major version as torch, and the kernel must support the call (its wrapper's
  ``supports(...)``: dtype, sizes, compute capability, shared memory), otherwise a ``ValueError`` /
  ``ImportError`` says what to change.
* ``"auto"``: the entry of ``TABLE`` for the tensor's device type (``"torch"`` on CPU). A ``"cuda"``
  entry is taken only once ``KERNELS_VALIDATED`` is True, CuPy is usable (else a warning, once) and the
  kernel supports the call; otherwise the torch path. A CPU entry is the slot for another CPU solver
  (e.g. SciPy ARPACK for ``"fiedler"``), registered in ``TABLE`` and ``IMPLEMENTATIONS``.

``sync_policy(device)`` is the other per-device choice: whether a solver may read device values on the
host to stop early (``"host"``, on CPU where a read is free) or must run fixed step blocks without any
read (``"device"``, on a GPU where each read drains the stream).

``KERNELS_VALIDATED`` is False: the kernels in ``csrc/`` were written and compile-checked without a
GPU, and nothing has run them yet. A session with a GPU runs ``pytest tests/gpu -q``; once the whole
suite passes there it sets ``KERNELS_VALIDATED = True`` below (and records the card, driver and CuPy
version in docs/kernels.md). Until then ``"auto"`` never picks the kernels; ``"cuda"`` still forces them.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "KERNELS_VALIDATED",
    "OPS",
    "TABLE",
    "cupy_status",
    "requested_backend",
    "select",
    "select_backend",
    "sync_policy",
]

KERNELS_VALIDATED = False
"""Flip to True only after ``pytest tests/gpu -q`` passes on a GPU (see the module docstring)."""

ENV_VAR = "DIFFCUT_GPU_BACKEND"
BACKENDS = ("auto", "torch", "cuda")
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

Backend = Literal["torch", "cuda"]

OPS = ("fiedler", "sweep", "gather", "renormalize", "attention")

TABLE: dict[str, dict[str, str]] = {op: {"cpu": "torch", "cuda": "cuda"} for op in OPS}
TABLE["fiedler"]["cpu"] = "arpack"
"""op -> device type -> the implementation ``"auto"`` takes there (a ``"cuda"`` entry only when the
kernel is validated, usable and supports the call). Device types not listed take ``"torch"``. On CPU the
Fiedler solve is SciPy ARPACK, one graph at a time (``spectral/arpack.py``: 3-4x faster than the batched
torch Lanczos there, where batching gains nothing, and exactly batch invariant); ``backend="torch"``
keeps the torch Lanczos."""

KERNEL_MODULES = {
    "fiedler": "lanczos",
    "sweep": "sweep",
    "gather": "gather",
    "renormalize": "power",
    "attention": "attention",
}
"""op -> module of ``diffcut_gpu.kernels`` whose ``supports(dtype, n, batch, capability, shared_memory)``
says whether its kernel can run a call (None) or why not (a reason)."""

IMPLEMENTATIONS: dict[tuple[str, str], str] = {
    ("fiedler", "cuda"): "diffcut_gpu.kernels.lanczos:lanczos_fiedler_cuda",
    ("fiedler", "arpack"): "diffcut_gpu.spectral.arpack:arpack_fiedler",
    ("sweep", "cuda"): "diffcut_gpu.kernels.sweep:sweep_cut_cuda",
    ("gather", "cuda"): "diffcut_gpu.kernels.gather:gather_subgraphs_cuda",
    ("renormalize", "cuda"): "diffcut_gpu.kernels.power:renormalize_rows_cuda",
    ("attention", "cuda"): "diffcut_gpu.kernels.attention:record_attention_cuda",
}
"""(op, implementation) -> "module:function" of the non-torch implementations, imported on first use
(the torch paths live with their callers in ``spectral/`` and ``attention/``)."""

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
    """Whether ``tensor``'s device could take the CUDA kernels at all: ``"torch"`` or ``"cuda"``.

    The device and dtype rule shared by every op, without any op's ``supports``; ``select`` adds those.

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
    """The ``"auto"`` device rule (separate so that it can be tested without a GPU)."""
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


def device_caps(tensor: Tensor) -> tuple[tuple[int, int], int]:
    """(compute capability, opt-in shared memory per block in bytes) of a CUDA tensor's device."""
    from ._common import device_index, device_limits

    index = device_index(tensor)
    return torch.cuda.get_device_capability(index), device_limits(index)[1]


MAX_GRID_Y = 65_535
"""CUDA's limit on gridDim.y, which carries the batch (or segment) count in the 2-D launches."""


def launch_support(dtype: torch.dtype, dtypes: tuple[torch.dtype, ...], capability: tuple[int, int], *,
                   batch: int, shared_need: int, shared_memory: int, min_capability: tuple[int, int] = (7, 0),
                   grid_y: bool = True) -> str | None:
    """The checks every kernel's ``supports`` shares: dtype, compute capability, gridDim.y, shared memory.

    bfloat16 storage needs sm_80 (native bf16 loads). Returns None or the first reason the launch fails.
    """
    if dtype not in dtypes:
        return f"dtype {dtype} is not one of {', '.join(str(d) for d in dtypes)}"
    need = max(min_capability, (8, 0)) if dtype == torch.bfloat16 else min_capability
    if tuple(capability) < need:
        return f"compute capability {capability[0]}.{capability[1]} is below {need[0]}.{need[1]}"
    if grid_y and batch > MAX_GRID_Y:
        return f"batch {batch} exceeds the grid limit {MAX_GRID_Y}"
    if shared_need > shared_memory:
        return f"needs {shared_need} bytes of shared memory per block, the device allows {shared_memory}"
    return None


def kernel_support(op: str, dtype: torch.dtype, n: int, batch: int,
                   capability: tuple[int, int], shared_memory: int) -> str | None:
    """None when the CUDA kernel of ``op`` can run the call, else the reason it cannot."""
    module = importlib.import_module(f"{__package__}.{KERNEL_MODULES[op]}")
    supports: Callable[..., str | None] | None = getattr(module, "supports", None)
    if supports is not None:
        return supports(dtype, n, batch, capability, shared_memory)
    if op == "attention":  # until kernels/attention.py declares its own: mma.m16n8k16 needs sm_80
        return launch_support(dtype, (torch.float32, torch.float16, torch.bfloat16), capability, batch=batch,
                              shared_need=0, shared_memory=shared_memory, min_capability=(8, 0), grid_y=False)
    return None


def select(op: str, tensor: Tensor, backend: str | None = None, *, n: int | None = None,
           batch: int | None = None, dtype: torch.dtype | None = None) -> str:
    """Implementation of ``op`` for a call whose main input is ``tensor``.

    Args:
        op: one of ``OPS``.
        tensor: the op's main input (its device decides, and its dtype unless ``dtype`` is given).
        backend: ``"auto"``, ``"torch"``, ``"cuda"`` or None (then ``$DIFFCUT_GPU_BACKEND``, default auto).
        n, batch: problem size for the kernel's ``supports`` (default: tensor.shape[-1], tensor.shape[0]).
        dtype: the dtype the kernel would read (default: tensor.dtype).

    Returns:
        ``"torch"``, ``"cuda"``, or another implementation registered in ``TABLE``.

    Raises:
        ValueError: unknown op or mode; ``"cuda"`` forced on a tensor off the GPU or for a call the kernel
            does not support (the message gives the kernel's reason).
        ImportError: ``"cuda"`` forced without a usable CuPy.
    """
    if op not in OPS:
        raise ValueError(f"op: expected one of {', '.join(OPS)}, got {op!r}")
    dtype = tensor.dtype if dtype is None else dtype
    mode = requested_backend(backend)
    if mode == "auto":
        entry = TABLE[op].get(tensor.device.type if not tensor.is_cuda else "cuda", "torch")
        if entry != "cuda":
            return entry
        if _auto(True, dtype) == "torch":
            return "torch"
    elif select_backend(tensor, backend) == "torch":
        return "torch"
    capability, shared = device_caps(tensor)
    n = tensor.shape[-1] if n is None else n
    batch = tensor.shape[0] if batch is None else batch
    reason = kernel_support(op, dtype, n, batch, capability, shared)
    if reason is None:
        return "cuda"
    if mode == "cuda":
        raise ValueError(f"backend: the CUDA {op} kernel cannot run this call: {reason}; use backend='torch'")
    return "torch"


def implementation(op: str, name: str) -> Callable[..., object]:
    """The function registered for (op, name) in ``IMPLEMENTATIONS``, imported on first use."""
    target = IMPLEMENTATIONS.get((op, name))
    if target is None:
        raise ValueError(f"implementation: nothing registered for op {op!r} and implementation {name!r}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def sync_policy(device: torch.device, requested: str = "auto") -> str:
    """``"host"`` or ``"device"``: whether solvers may read device values to stop early on ``device``.

    ``requested`` other than ``"auto"`` is returned as it is (a test forces ``"device"`` on CPU).
    """
    if requested != "auto":
        return requested
    return "host" if device.type == "cpu" else "device"
