"""The emulator's options for its blind spots, and every kernel run under them.

A fixed schedule (fibers resumed in thread order, each running to its next barrier) and shared memory
poisoned with a large finite value once per launch hide four kinds of defect that a GPU exposes.
``test_option_reveals_defect`` shows each on a small kernel with exactly that defect: the default
emulator passes it, the matching option (``cuda_emu.h``: EMU_SHUFFLE, EMU_PREEMPT, EMU_NAN, EMU_FRESH)
catches it. ``test_kernels_under_strict_emulator`` then reruns the kernel tests of test_emulated.py
with all four options on, for several random schedules. The real-block-size run is slow and opt-in:
``DIFFCUT_EMU_REAL_BLOCKS=1 DIFFCUT_EMU_OPTIONS=strict pytest tests/kernels`` (every emulated test).
"""

from __future__ import annotations

import pytest
import torch

from tests.kernels import test_emulated as kernels
from tests.kernels.emu import harness

pytestmark = pytest.mark.skipif(not harness.HAVE_TOOLS, reason=harness.SKIP_REASON)

DEFECTS = r"""
#include "common.cuh"

struct EmuRow { float v[64]; };
struct EmuAcc { float total; };

// Reads a neighbour's slot with no barrier after the writes: right only if thread t - 1 ran first.
extern "C" __global__ void emu_missing_barrier(float* out) {
    DG_SHARED(EmuRow, sh);
    const int t = threadIdx.x;
    sh.v[t] = (float)t;
    out[t] = t > 0 ? sh.v[t - 1] : 0.f;
}

// Non-atomic read-modify-write of one shared word by every thread: right only if no thread is
// interrupted between its read and its write (the threadIdx read in between is a preemption point).
extern "C" __global__ void emu_lost_update(float* out) {
    DG_SHARED(EmuAcc, sh);
    if (threadIdx.x == 0) sh.total = 0.f;
    __syncthreads();
    const float v = sh.total;
    sh.total = v + (threadIdx.x < 1024u ? 1.f : 0.f);
    __syncthreads();
    if (threadIdx.x == 0) out[0] = sh.total;
}

// Odd slots are never written; multiplying them by 0 hides a finite poison but not NaN.
extern "C" __global__ void emu_unwritten_read(float* out) {
    DG_SHARED(EmuRow, sh);
    const int t = threadIdx.x;
    if (t % 2 == 0) sh.v[t] = 1.f;
    __syncthreads();
    out[t] = 0.f * sh.v[t] + 1.f;
}

// Only block 0 initialises the shared word; later blocks read whatever is there.
extern "C" __global__ void emu_stale_block(float* out) {
    DG_SHARED(EmuAcc, sh);
    if (blockIdx.x == 0 && threadIdx.x == 0) sh.total = 5.f;
    __syncthreads();
    out[blockIdx.x * blockDim.x + threadIdx.x] = sh.total;
}
"""

CASES = {
    # option: (kernel, blocks, output size, what a correct kernel would give)
    "shuffle": ("emu_missing_barrier", 1, 64, torch.cat([torch.zeros(1), torch.arange(63.0)])),
    "preempt": ("emu_lost_update", 1, 1, torch.tensor([64.0])),
    "nan": ("emu_unwritten_read", 1, 64, torch.ones(64)),
    "fresh": ("emu_stale_block", 2, 128, torch.full((128,), 5.0)),
}


@pytest.fixture(scope="module")
def defects():
    return harness.load(harness.build("emu_defects", DEFECTS))


def _run(lib, name: str, blocks: int, size: int) -> torch.Tensor:
    out = torch.zeros(size)
    harness.EmuKernel(lib, name, 0)((blocks,), (64,), (out,))
    return out


@pytest.mark.parametrize("option", list(CASES))
def test_option_reveals_defect(defects, option):
    name, blocks, size, looks_right = CASES[option]
    libs = {"defects": defects}
    with harness.options(libs, ()):
        assert torch.equal(_run(defects, name, blocks, size), looks_right)  # the blind spot
    for seed in (1, 2, 3):
        with harness.options(libs, (option,), seed):
            assert not torch.equal(_run(defects, name, blocks, size), looks_right), (option, seed)


STRICT_RUNS = [
    (kernels.test_lanczos_matches_eigh, ("fused", torch.float32)),
    (kernels.test_lanczos_matches_eigh, ("tiled", torch.bfloat16)),
    (kernels.test_lanczos_strategies_and_torch_path_agree, ()),
    (kernels.test_lanczos_degenerate, ()),
    (kernels.test_sweep_matches_ref, (torch.float16,)),
    (kernels.test_gather_matches_ref, (torch.float32,)),
    (kernels.test_power_walk_matches_ref, (torch.float32,)),
    (kernels.test_attention_matches_ref, (torch.float16, (2, 1, 5, 9, 3))),
    (kernels.test_attention_matches_ref, (torch.float32, (1, 2, 70, 65, 24))),
]


@pytest.mark.parametrize("seed", [11, 12])
@pytest.mark.parametrize("run", range(len(STRICT_RUNS)), ids=lambda i: STRICT_RUNS[i][0].__name__[5:] + str(i))
def test_kernels_under_strict_emulator(monkeypatch, seed, run):
    """Random order, preemption, NaN-poisoned and per-block fresh shared memory: same answers."""
    harness.patch_wrappers(monkeypatch)
    test, args = STRICT_RUNS[run]
    with harness.options(harness.load_libs(), harness.STRICT, seed):
        test(None, *args)
