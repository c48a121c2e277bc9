"""select_backend with real CUDA tensors, and the loader compiling every entry point on this device."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu.kernels.loader import ENTRY_POINTS
from tests.gpu.conftest import requires_gpu

pytestmark = requires_gpu


def test_dispatch_on_cuda(monkeypatch):
    from diffcut_gpu.kernels import dispatch

    t = torch.zeros(2, 4, 4, device="cuda")
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert dispatch.select_backend(t, "torch") == "torch"
    assert dispatch.select_backend(t, "cuda") == "cuda"
    monkeypatch.setattr(dispatch, "KERNELS_VALIDATED", False)
    assert dispatch.select_backend(t) == "torch"
    monkeypatch.setattr(dispatch, "KERNELS_VALIDATED", True)
    assert dispatch.select_backend(t) == "cuda"
    assert dispatch.select_backend(t.double()) == "torch"
    monkeypatch.setenv(dispatch.ENV_VAR, "torch")
    assert dispatch.select_backend(t) == "torch"


def test_cupy_matches_torch_cuda():
    from diffcut_gpu.kernels import cupy_status

    usable, reason = cupy_status()
    assert usable, reason


@pytest.mark.parametrize("kernel", sorted(ENTRY_POINTS))
def test_every_entry_point_loads(kernel):
    from diffcut_gpu.kernels import loader

    _, suffixes = loader.ENTRY_POINTS[kernel]
    dtypes = [d for d, s in loader.DTYPE_SUFFIX.items() if s in suffixes] or [None]
    for dtype in dtypes:
        fn = loader.get_kernel(kernel, dtype, torch.device("cuda"))
        assert fn is loader.get_kernel(kernel, dtype)  # cached per device


def test_zero_copy_interop():
    from diffcut_gpu.kernels.interop import as_cupy, as_torch, on_torch_stream

    t = torch.arange(10, device="cuda", dtype=torch.float32)
    with on_torch_stream(t.device):
        a = as_cupy(t)
        a[3] = 42
        back = as_torch(a)
    assert back.data_ptr() == t.data_ptr() and float(t[3]) == 42
