"""Run the CUDA kernels of ``csrc/`` on the CPU: build them against ``cuda_emu.h``, call them like CuPy.

``load_libs()`` compiles each source exactly as NVRTC would see it (``loader.source_text``) with g++,
once per source text (cached on disk under the temp folder, keyed by a hash of everything that goes
into the build). ``patch_wrappers(monkeypatch)`` points the real Python wrappers at those libraries:
kernel lookup, the CUDA-only tensor and device checks and the stream context are replaced, while
``interop.launch`` itself runs (grid limits, shared-memory checks and opt-in). The emulated device
is an H100-like one: compute capability 9.0, 132 SMs, 227 KiB of opt-in shared memory per block.

Environment:
    DIFFCUT_EMU_REAL_BLOCKS=1  launch every kernel with its real block size (slow) instead of capping
                               blocks at 64 threads (2 warps);
    DIFFCUT_EMU_OPTIONS=...    comma-separated emulator options for every launch: shuffle, preempt,
                               nan, fresh, or strict (all four);
    DIFFCUT_EMU_SEED=n         seed of the random schedule (default 1).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import torch

from diffcut_gpu.kernels import _common, attention, gather, interop, lanczos, limits, loader, power, sweep

EMU = Path(__file__).resolve().parent
CSRC = Path(loader.__file__).resolve().parents[2] / "csrc"  # the checkout's sources: common.cuh for #include
FFI_HEADERS = (
    "/usr/include/ffi.h",
    "/usr/include/x86_64-linux-gnu/ffi.h",
    "/usr/include/aarch64-linux-gnu/ffi.h",
)
HAVE_TOOLS = shutil.which("g++") is not None and any(Path(p).exists() for p in FFI_HEADERS)
SKIP_REASON = "needs g++ and libffi headers (apt-get install g++ libffi-dev)"

REAL_BLOCKS = os.environ.get("DIFFCUT_EMU_REAL_BLOCKS", "") not in ("", "0")
BLOCK_CAP = None if REAL_BLOCKS else 64
CAPABILITY = (9, 0)
NUM_SMS = 132
SMEM_OPTIN = 227 * 1024

OPTION_FLAGS = {"shuffle": 1, "preempt": 2, "nan": 4, "fresh": 8}
STRICT = ("shuffle", "preempt", "nan", "fresh")
YIELD_PER_1024 = 256  # preemption probability at each threadIdx / blockDim read: 1 / 4

SHARED_STRUCTS = {"lanczos.cu": ("LzShared", "LzStepShared"), "sweep.cu": ("SwScanShared",)}
"""Static shared structs of each source, whose sizes the build exports (emu_sizeof_<name>)."""

STATIC_SHARED = {
    "lanczos_fused": ("LzShared",),
    "lanczos_init": ("LzShared",),
    "lanczos_step": ("LzShared", "LzStepShared"),
    "sweep_scan": ("SwScanShared",),
}
"""Static shared variables of each entry point (without dtype suffix), for ``shared_size_bytes``."""

LAUNCHES: collections.Counter = collections.Counter()
"""Launches per entry point (a test may swap in its own counter)."""

_KIND = {np.int32: 1, np.int64: 2, np.float32: 3, np.float64: 4}
_CTYPE = {1: ctypes.c_int32, 2: ctypes.c_int64, 3: ctypes.c_float, 4: ctypes.c_double}
_FLAGS = ["-std=c++17", "-O1", "-fPIC", "-shared"]


def _cache_dir() -> Path:
    cache = Path(tempfile.gettempdir()) / f"diffcut-emu-{os.getuid()}"
    cache.mkdir(exist_ok=True)
    return cache


def build(stem: str, source: str, extra: str = "") -> Path:
    """Shared library of ``source`` (CUDA text, headers pasted in) compiled against ``cuda_emu.h``,
    with ``extra`` C++ appended; cached by a hash of everything that goes into the build."""
    cache = _cache_dir()
    header = (EMU / "cuda_emu.h").read_text()
    key = hashlib.sha256("\0".join([source, extra, header, *_FLAGS]).encode()).hexdigest()[:16]
    so = cache / f"{stem}_{key}.so"
    if so.exists():
        return so
    work = Path(tempfile.mkdtemp(dir=cache))
    (work / f"{stem}_src.cu").write_text(source)
    (work / f"{stem}_emu.cpp").write_text(f'#include "cuda_emu.h"\n#include "{stem}_src.cu"\n{extra}')
    out = work / so.name
    includes = [f"-I{EMU}", f"-I{work}", f"-I{CSRC}"]
    cmd = ["g++", *_FLAGS, *includes, str(work / f"{stem}_emu.cpp"), "-o", str(out), "-lffi"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise AssertionError(f"{stem} does not build as emulated C++:\n{proc.stderr[-4000:]}")
    os.replace(out, so)  # atomic: a concurrent run sees the old library or the whole new one
    shutil.rmtree(work, ignore_errors=True)
    return so


def load(so: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(so))
    lib.emu_switches.restype = ctypes.c_ulonglong
    lib.emu_static_shared_bytes.restype = ctypes.c_ulong
    return lib


@functools.cache
def load_libs() -> dict[str, ctypes.CDLL]:
    """Every ``csrc/*.cu`` built for the emulator and loaded, by file name (built once per source)."""
    libs = {}
    for filename in loader.source_files():
        probes = "".join(
            f'extern "C" unsigned long emu_sizeof_{name}() {{ return sizeof({name}); }}\n'
            for name in SHARED_STRUCTS.get(filename, ())
        )
        libs[filename] = load(build(Path(filename).stem, loader.source_text(filename), probes))
    set_options(libs, _env_options(), int(os.environ.get("DIFFCUT_EMU_SEED", "1")))
    return libs


def _env_options() -> tuple[str, ...]:
    names = [o.strip() for o in os.environ.get("DIFFCUT_EMU_OPTIONS", "").split(",") if o.strip()]
    out: list[str] = []
    for name in names:
        if name == "strict":
            out += STRICT
        elif name in OPTION_FLAGS:
            out.append(name)
        else:
            raise ValueError(f"DIFFCUT_EMU_OPTIONS: expected {', '.join(OPTION_FLAGS)} or strict, got {name!r}")
    return tuple(out)


def set_options(libs: dict[str, ctypes.CDLL], options: tuple[str, ...] = (), seed: int = 1) -> None:
    """Emulator options (``OPTION_FLAGS`` names) and random seed for all following launches."""
    flags = 0
    for name in options:
        flags |= OPTION_FLAGS[name]
    for lib in libs.values():
        lib.emu_set_options(ctypes.c_uint(flags), ctypes.c_uint(YIELD_PER_1024), ctypes.c_ulonglong(seed))


@contextlib.contextmanager
def options(libs: dict[str, ctypes.CDLL], names: tuple[str, ...], seed: int = 1):
    """Run a block under the given emulator options, then restore the environment's."""
    set_options(libs, names, seed)
    try:
        yield
    finally:
        set_options(libs, _env_options(), int(os.environ.get("DIFFCUT_EMU_SEED", "1")))


def struct_size(libs: dict[str, ctypes.CDLL], filename: str, name: str) -> int:
    fn = getattr(libs[filename], f"emu_sizeof_{name}")
    fn.restype = ctypes.c_ulong
    return int(fn())


class EmuKernel:
    """Callable like a ``cupy.RawKernel``: kernel(grid, block, args, shared_mem=...), on CPU tensors.

    Like the CUDA driver, it refuses a launch whose dynamic shared memory exceeds
    ``max_dynamic_shared_size_bytes`` (48 KiB minus the static size until the wrapper opts in), whose
    static + dynamic total exceeds the device's opt-in limit, or whose grid exceeds ``limits``.
    """

    def __init__(self, lib: ctypes.CDLL, name: str, static_bytes: int):
        self.lib, self.name = lib, name
        self.fn = ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
        self.shared_size_bytes = static_bytes
        self.max_dynamic_shared_size_bytes = 48 * 1024 - static_bytes

    def __call__(self, grid, block, args, shared_mem=0):
        if shared_mem > self.max_dynamic_shared_size_bytes or shared_mem + self.shared_size_bytes > SMEM_OPTIN:
            raise RuntimeError(
                f"{self.name}: launch failed: {shared_mem} B of dynamic shared memory, limit "
                f"{self.max_dynamic_shared_size_bytes} B ({self.shared_size_bytes} B static)"
            )
        LAUNCHES[self.name] += 1
        grid = tuple(int(g) for g in grid) + (1,) * (3 - len(grid))
        if grid[0] > limits.MAX_GRID_X or max(grid[1:]) > limits.MAX_GRID_YZ:  # read at call time: tests lower it
            raise RuntimeError(f"{self.name}: launch failed: grid {grid} beyond the device's limits")
        real = self.name.startswith("attn_") or BLOCK_CAP is None  # attention needs its 4 warps
        threads = block[0] if real else min(block[0], BLOCK_CAP)
        kinds, keep = [], []
        for a in args:
            if isinstance(a, torch.Tensor):
                assert not a.is_cuda and a.numel() > 0, f"{self.name}: empty or CUDA tensor argument"
                kinds.append(0)
                keep.append(ctypes.c_void_p(a.data_ptr()))
            else:
                kind = _KIND[type(a)]
                kinds.append(kind)
                keep.append(_CTYPE[kind](a.item()))
        values = (ctypes.c_void_p * len(args))(*[ctypes.addressof(v) for v in keep])
        kinds_arr = (ctypes.c_int * len(args))(*kinds)
        rc = self.lib.emu_launch(
            ctypes.c_void_p(self.fn),
            *[ctypes.c_uint(g) for g in grid],
            ctypes.c_uint(threads),
            ctypes.c_ulong(shared_mem),
            len(args),
            kinds_arr,
            values,
        )
        assert rc == 0, f"emu_launch failed for {self.name}: {rc}"


@functools.cache
def emu_kernel(kernel: str, dtype: torch.dtype | None) -> EmuKernel:
    """One ``EmuKernel`` per entry point for the whole session, like the loader's cache on a GPU."""
    libs = load_libs()
    filename = loader.ENTRY_POINTS[kernel][0]
    static = sum(struct_size(libs, filename, s) for s in STATIC_SHARED.get(kernel, ()))
    return EmuKernel(libs[filename], loader.entry_name(kernel, dtype), static)


def _check_tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    return t


WRAPPERS = (lanczos, sweep, gather, power, attention)


def patch_wrappers(monkeypatch, *, capability: tuple[int, int] = CAPABILITY, smem_optin: int = SMEM_OPTIN) -> None:
    """Point the kernel wrappers at the emulator (CPU tensors in, same code path otherwise)."""
    load_libs()

    def get_kernel(kernel, dtype=None, device=None):
        return emu_kernel(kernel, dtype)

    replacements = {
        "check_cuda_tensor": _check_tensor,
        "on_torch_stream": lambda device: contextlib.nullcontext(),
        "cupy_args": tuple,
        "device_index": lambda t: 0,
        "device_index_of": lambda device: 0,
        "device_limits": lambda index: (NUM_SMS, smem_optin),
        "compute_capability": lambda index: capability,
    }
    for module in WRAPPERS:
        monkeypatch.setattr(module, "get_kernel", get_kernel)
    for module in (*WRAPPERS, interop, _common):
        for name, value in replacements.items():
            if hasattr(module, name):
                monkeypatch.setattr(module, name, value)
