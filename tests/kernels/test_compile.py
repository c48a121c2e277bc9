"""The CUDA sources compile as NVRTC will see them (no GPU needed; skipped without a compiler).

Each test compiles ``loader.source_text(file)``, the exact text CuPy hands to NVRTC (headers pasted in),
to PTX for sm_90 (NVRTC also for sm_75, the oldest target), and checks that every entry point listed in
``loader.ENTRY_POINTS`` is in it.
``nvcc`` is found on PATH; NVRTC itself (libnvrtc) through ``$DIFFCUT_NVRTC`` (a path to the
library), the pip package ``nvidia-cuda-nvrtc``, or the CUDA toolkit. ``.ci/compile_cuda.sh`` does
the nvcc check for sm_75, sm_80 and sm_90.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from diffcut_gpu.kernels import loader

SOURCES = loader.source_files()
ARCH = "90"


def _expected_entries(filename: str) -> set[str]:
    names = set()
    for kernel, (src, suffixes) in loader.ENTRY_POINTS.items():
        if src == filename:
            names.update(f"{kernel}_{s}" for s in suffixes) if suffixes else names.add(kernel)
    return names


def _ptx_entries(ptx: str) -> set[str]:
    return set(re.findall(r"\.entry\s+([A-Za-z_][A-Za-z0-9_]*)\s*\(", ptx))


def test_smoke_every_source_is_listed():
    listed = {src for src, _ in loader.ENTRY_POINTS.values()}
    assert set(SOURCES) == listed
    assert {"lanczos.cu", "sweep.cu", "gather.cu", "power.cu", "attention.cu"} <= set(SOURCES)


@pytest.mark.parametrize("filename", SOURCES)
def test_sources_need_no_system_headers(filename):
    text = loader.source_text(filename)
    assert not re.search(r"^\s*#\s*include\s*<", text, re.MULTILINE), "NVRTC has no host/system headers"
    assert not re.search(r'^\s*#\s*include\s*"', text, re.MULTILINE), "local headers must be pasted in"
    assert 'extern "C" __global__' in text


@pytest.mark.parametrize("filename", SOURCES)
def test_shared_memory_only_through_the_macros(filename):
    """Raw ``__shared__`` declarations would escape the emulator's poisoning (tests/kernels/emu)."""
    text = (Path(loader.__file__).resolve().parents[2] / "csrc" / filename).read_text()
    code = re.sub(r"//[^\n]*", "", text)
    assert "__shared__" not in code, "declare shared memory with DG_SHARED / DG_DYNAMIC_SMEM (common.cuh)"


def _find_nvrtc() -> ctypes.CDLL | None:
    candidates = [os.environ.get("DIFFCUT_NVRTC", "")]
    for root in sys.path:
        candidates += sorted(glob.glob(os.path.join(root, "nvidia", "*", "lib", "libnvrtc.so*")))
        candidates += sorted(glob.glob(os.path.join(root, "nvidia", "cuda_nvrtc", "lib", "libnvrtc.so*")))
    for home in (os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda"):
        if home:
            candidates += sorted(glob.glob(os.path.join(home, "lib64", "libnvrtc.so*")))
    found = ctypes.util.find_library("nvrtc")
    if found:
        candidates.append(found)
    for path in candidates:
        if path and "builtins" not in path and ".alt." not in path:
            # libnvrtc dlopens its builtins library by name: load it first from the same folder.
            for builtins in sorted(glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*"))):
                if ".alt." not in builtins:
                    try:
                        ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL)
                    except OSError:
                        pass
            try:
                return ctypes.CDLL(path)
            except OSError:
                continue
    return None


def _nvrtc_compile(lib: ctypes.CDLL, source: str, name: str, options: list[str]) -> tuple[int, str, str]:
    """(status, log, ptx) of one NVRTC compilation."""
    prog = ctypes.c_void_p()
    status = lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(), name.encode(), 0, None, None)
    assert status == 0, f"nvrtcCreateProgram failed: {status}"
    opts = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    try:
        status = lib.nvrtcCompileProgram(prog, len(options), opts)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        ptx = ""
        if status == 0:
            lib.nvrtcGetPTXSize(prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            lib.nvrtcGetPTX(prog, buf)
            ptx = buf.value.decode()
        return status, log.value.decode(errors="replace"), ptx
    finally:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))


_NVRTC = _find_nvrtc()


@pytest.mark.skipif(_NVRTC is None, reason="libnvrtc not found (DIFFCUT_NVRTC=path or nvidia-cuda-nvrtc)")
@pytest.mark.parametrize("arch", ["75", ARCH])
@pytest.mark.parametrize("filename", SOURCES)
def test_nvrtc_compiles(filename, arch):
    """Every module compiles for sm_75 too (the attention mma is compiled out below sm_80)."""
    options = [*loader.COMPILE_OPTIONS, f"--gpu-architecture=compute_{arch}"]
    status, log, ptx = _nvrtc_compile(_NVRTC, loader.source_text(filename), filename, options)
    assert status == 0, f"NVRTC failed on {filename}:\n{log}"
    assert _expected_entries(filename) <= _ptx_entries(ptx)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
@pytest.mark.parametrize("filename", SOURCES)
def test_nvcc_compiles(filename, tmp_path: Path):
    src = tmp_path / filename
    src.write_text(loader.source_text(filename))
    ptx = tmp_path / (filename + ".ptx")
    cmd = ["nvcc", *loader.COMPILE_OPTIONS, f"-arch=sm_{ARCH}", "-ptx", str(src), "-o", str(ptx)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _expected_entries(filename) <= _ptx_entries(ptx.read_text())
