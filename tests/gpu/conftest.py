"""Shared pieces of the GPU kernel suite (runs only where CUDA and CuPy are present).

Every kernel is compared with its torch twin and with a float64 reference on fresh random inputs:
attention-like graphs (softmax of random low-rank scores, reversibilized), planted blocks, odd sizes,
padded mixed buckets, and fp32 / fp16 / bf16 storage.
"""

from __future__ import annotations

import importlib.util
import os
import signal

import pytest
import torch

from tests.conftest import attention_like

HAS_GPU_STACK = torch.cuda.is_available() and importlib.util.find_spec("cupy") is not None
requires_gpu = pytest.mark.skipif(
    not HAS_GPU_STACK, reason="needs a CUDA device and CuPy (pip install diffcut-gpu[cuda12])"
)

STORAGE = [torch.float32, torch.float16, torch.bfloat16]

TEST_TIMEOUT_S = int(os.environ.get("DIFFCUT_TEST_TIMEOUT", "0") or 0)
"""Per-test time limit in seconds (0: none), for benchmarks/gpu_validate.sh where pytest-timeout may be
missing. SIGALRM interrupts Python code; a kernel that never returns is left to the script's outer
``timeout`` per file."""


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    if TEST_TIMEOUT_S <= 0 or not hasattr(signal, "SIGALRM"):
        yield
        return

    def expired(signum, frame):
        raise TimeoutError(f"{item.nodeid}: over the per-test limit of {TEST_TIMEOUT_S} s (DIFFCUT_TEST_TIMEOUT)")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIMEOUT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def attention_graph(
    b: int, n: int, *, seed: int, dtype: torch.dtype = torch.float32, rank: int = 8, temperature: float = 3.0
) -> torch.Tensor:
    """(B, N, N) reversibilized attention-like graph on the GPU, W = (Pi P + P^T Pi) / 2, max scaled to 1."""
    from diffcut_gpu.spectral.graph import reversibilize

    P = attention_like(b, n, rank=rank, temperature=temperature, seed=seed)
    W = reversibilize(P)
    W = W / W.amax(dim=(-1, -2), keepdim=True)
    return W.to(device="cuda", dtype=dtype)


def padded_batch(
    sizes: list[int], *, seed: int, dtype: torch.dtype = torch.float32, pad_value: float = float("nan")
) -> tuple[torch.Tensor, torch.Tensor]:
    """A mixed bucket: graphs of the given sizes in one (B, N, N) tensor, padding filled with pad_value."""
    n = max(sizes)
    W = torch.full((len(sizes), n, n), pad_value, dtype=torch.float32, device="cuda")
    for i, s in enumerate(sizes):
        W[i, :s, :s] = attention_graph(1, s, seed=seed + i)[0]
    return W.to(dtype), torch.tensor(sizes, dtype=torch.int64, device="cuda")


def poison_allocator(nbytes: int = 1 << 28) -> None:
    """Fill blocks of torch's caching allocator (large pool and small pool) with NaN bytes and free them,
    so that outputs the kernels allocate with torch.empty start as NaN: an unwritten element shows up."""
    torch.cuda.synchronize()
    blocks = [torch.empty(nbytes // 4, dtype=torch.float32, device="cuda")]
    blocks += [torch.empty(1 << 17, dtype=torch.float32, device="cuda") for _ in range(32)]  # 512 KiB each
    for block in blocks:
        block.fill_(float("nan"))
    torch.cuda.synchronize()
    del blocks


def stored(W: torch.Tensor) -> torch.Tensor:
    """The graph exactly as the kernels see it (storage rounding included), in float64."""
    return W.to(torch.float64)


def sizes_or_full(sizes: torch.Tensor | None, b: int, n: int) -> torch.Tensor:
    return torch.full((b,), n, dtype=torch.int64, device="cuda") if sizes is None else sizes
