"""CUDA sources of ``csrc/``: read from package data, compiled lazily by NVRTC (CuPy), cached per device.

The ``.cu`` files ship as package data of ``diffcut_gpu.csrc`` (setup.py maps the top-level ``csrc/`` to
that package), so a checkout and an installed wheel read them the same way. Entry points are
``extern "C"`` and named ``<kernel>_<dtype>`` (``lanczos_fused_f16``), or just ``<kernel>`` for kernels
that do not touch the graph's storage (``lanczos_step``). ``get_kernel(kernel, dtype)`` is the only
lookup. NVRTC sees no include path: ``#include "x.cuh"`` lines are replaced by the header's text here.

Because the entry points are ``extern "C"`` (unmangled), ``cupy.RawModule`` needs no
``name_expressions``: those exist to look up the lowered names of templates.
"""

from __future__ import annotations

import re
import threading
from importlib import resources

import torch

__all__ = [
    "COMPILE_OPTIONS",
    "DTYPE_SUFFIX",
    "ENTRY_POINTS",
    "entry_name",
    "get_kernel",
    "source_files",
    "source_text",
]

COMPILE_OPTIONS: tuple[str, ...] = ("-std=c++17",)

DTYPE_SUFFIX: dict[torch.dtype, str] = {
    torch.float32: "f32",
    torch.float16: "f16",
    torch.bfloat16: "bf16",
    torch.float64: "f64",
}

_W3 = ("f32", "f16", "bf16")
ENTRY_POINTS: dict[str, tuple[str, tuple[str, ...]]] = {
    # kernel: (source file, dtype suffixes; () = one dtype-free entry point named like the kernel)
    "lanczos_fused": ("lanczos.cu", _W3),
    "lanczos_degrees": ("lanczos.cu", _W3),
    "lanczos_matvec": ("lanczos.cu", _W3),
    "lanczos_init": ("lanczos.cu", ()),
    "lanczos_step": ("lanczos.cu", ()),
    "sweep_rows": ("sweep.cu", _W3),
    "sweep_scan": ("sweep.cu", ()),
    "gather_subgraphs": ("gather.cu", ("f32", "f16", "bf16", "f64")),
    "renorm_rows": ("power.cu", ("f32", "f64")),
    "attn_stats": ("attention.cu", _W3),
    "attn_accumulate": ("attention.cu", _W3),
}

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*$', re.MULTILINE)
_lock = threading.Lock()
_modules: dict[tuple[int, str], object] = {}
_kernels: dict[tuple[int, str], object] = {}


def _package_dir():
    """The ``csrc/`` matching the imported ``diffcut_gpu``: the checkout's own ``<repo>/csrc`` when the
    package is imported from a checkout (so that a second checkout or git worktree never compiles the
    sources of the one installed in editable mode), else the package data ``diffcut_gpu.csrc``."""
    checkout = resources.files("diffcut_gpu").joinpath("..", "csrc")
    if checkout.joinpath("common.cuh").is_file() and checkout.joinpath("__init__.py").is_file():
        return checkout
    return resources.files("diffcut_gpu.csrc")


def source_files() -> list[str]:
    """Names of the ``.cu`` files shipped in ``diffcut_gpu.csrc``, sorted."""
    return sorted(p.name for p in _package_dir().iterdir() if p.name.endswith(".cu"))


def source_text(filename: str) -> str:
    """Text of ``csrc/<filename>`` with its local ``#include "..."`` headers pasted in (each once)."""
    seen: set[str] = set()

    def expand(name: str) -> str:
        path = _package_dir() / name
        if not path.is_file():
            raise FileNotFoundError(f"filename: expected a CUDA source in diffcut_gpu.csrc, got {name!r}")
        text = path.read_text(encoding="utf-8")

        def include(match: re.Match) -> str:
            header = match.group(1)
            if header in seen:
                return f"// {header} already included"
            seen.add(header)
            return f"// ---- begin {header}\n{expand(header)}\n// ---- end {header}"

        return _INCLUDE.sub(include, text)

    seen.add(filename)
    return expand(filename)


def entry_name(kernel: str, dtype: torch.dtype | None = None) -> str:
    """Entry-point name of ``kernel`` for storage ``dtype`` (``None`` for dtype-free kernels)."""
    if kernel not in ENTRY_POINTS:
        raise ValueError(f"kernel: expected one of {', '.join(sorted(ENTRY_POINTS))}, got {kernel!r}")
    _, suffixes = ENTRY_POINTS[kernel]
    if not suffixes:
        if dtype is not None:
            raise ValueError(f"dtype: expected None for the dtype-free kernel {kernel!r}, got {dtype}")
        return kernel
    suffix = DTYPE_SUFFIX.get(dtype)
    if suffix not in suffixes:
        allowed = ", ".join(str(d) for d, s in DTYPE_SUFFIX.items() if s in suffixes)
        raise ValueError(f"dtype: expected one of {allowed} for kernel {kernel!r}, got {dtype}")
    return f"{kernel}_{suffix}"


def get_kernel(kernel: str, dtype: torch.dtype | None = None, device: torch.device | int | None = None):
    """The compiled ``cupy.RawKernel`` of ``kernel`` for ``dtype`` on ``device`` (default: current device).

    The source is compiled by NVRTC on first use for each device and kept for the life of the process
    (CuPy also keeps compiled binaries on disk, keyed by the source text).
    """
    from .dispatch import cupy_status

    usable, reason = cupy_status()
    if not usable:
        raise ImportError(f"CUDA kernels need CuPy: {reason}")
    import cupy

    name = entry_name(kernel, dtype)
    filename = ENTRY_POINTS[kernel][0]
    index = _device_index(device)
    with _lock:
        fn = _kernels.get((index, name))
        if fn is None:
            with cupy.cuda.Device(index):
                module = _modules.get((index, filename))
                if module is None:
                    module = cupy.RawModule(code=source_text(filename), options=COMPILE_OPTIONS)
                    _modules[(index, filename)] = module
                fn = module.get_function(name)
            _kernels[(index, name)] = fn
    return fn


def _device_index(device: torch.device | int | None) -> int:
    if device is None:
        return torch.cuda.current_device()
    if isinstance(device, int):
        return device
    device = torch.device(device)
    if device.type != "cuda":
        raise ValueError(f"device: expected a CUDA device, got {device}")
    return torch.cuda.current_device() if device.index is None else device.index
