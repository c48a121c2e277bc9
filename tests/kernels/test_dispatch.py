"""Backend dispatch, kernel lookup and wrapper checks: all of the CUDA backend that runs on CPU."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

from diffcut_gpu.kernels import dispatch, loader
from diffcut_gpu.kernels._common import aligned_rows, sizes_tensor
from diffcut_gpu.kernels.lanczos import choose_strategy

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    monkeypatch.setattr(dispatch, "_warned", False)


class _FakeCuda(torch.Tensor):
    """A CPU tensor that claims to be on CUDA, to reach the CUDA branches of the dispatch on CPU."""

    @property
    def is_cuda(self) -> bool:
        return True


def _fake_cuda(t: torch.Tensor) -> torch.Tensor:
    return torch.Tensor._make_subclass(_FakeCuda, t)


def test_smoke_cpu_tensors_take_the_torch_path():
    t = torch.zeros(2, 3, 3)
    assert dispatch.select_backend(t) == "torch"
    assert dispatch.select_backend(t, "auto") == "torch"
    assert dispatch.select_backend(t, "torch") == "torch"


def test_exception_cuda_on_cpu_tensor():
    with pytest.raises(ValueError, match=r"backend: expected a CUDA tensor .* got a tensor on cpu"):
        dispatch.select_backend(torch.zeros(2, 3, 3), "cuda")
    with pytest.raises(TypeError, match=r"tensor: expected a torch\.Tensor"):
        dispatch.select_backend([1, 2], "torch")


def test_env_var_parsing(monkeypatch):
    t = torch.zeros(1)
    monkeypatch.setenv(dispatch.ENV_VAR, "  TORCH ")
    assert dispatch.requested_backend() == "torch"
    monkeypatch.setenv(dispatch.ENV_VAR, "Cuda")
    assert dispatch.requested_backend() == "cuda"
    with pytest.raises(ValueError, match="expected a CUDA tensor"):  # the env var alone forces cuda
        dispatch.select_backend(t)
    assert dispatch.select_backend(t, "torch") == "torch"  # the argument wins over the env var
    monkeypatch.setenv(dispatch.ENV_VAR, "gpu")
    with pytest.raises(
        ValueError, match=r"DIFFCUT_GPU_BACKEND: expected one of auto, torch, cuda, got 'gpu'"
    ):
        dispatch.select_backend(t)
    with pytest.raises(ValueError, match=r"backend: expected one of auto, torch, cuda, got 'fast'"):
        dispatch.select_backend(t, "fast")
    monkeypatch.delenv(dispatch.ENV_VAR)
    assert dispatch.requested_backend() == "auto"


def test_auto_stays_on_torch_until_validated(monkeypatch):
    assert dispatch.KERNELS_VALIDATED is False  # flip only after `pytest tests/gpu` passes on a GPU
    monkeypatch.setattr(dispatch, "cupy_status", lambda: (True, "ok"))
    assert dispatch.select_backend(_fake_cuda(torch.zeros(4))) == "torch"
    monkeypatch.setattr(dispatch, "KERNELS_VALIDATED", True)
    assert dispatch.select_backend(_fake_cuda(torch.zeros(4))) == "cuda"
    assert dispatch.select_backend(_fake_cuda(torch.zeros(4, dtype=torch.float16))) == "cuda"
    assert dispatch.select_backend(_fake_cuda(torch.zeros(4, dtype=torch.float64))) == "torch"
    assert dispatch.select_backend(torch.zeros(4)) == "torch"


def test_auto_warns_once_without_cupy(monkeypatch):
    monkeypatch.setattr(dispatch, "KERNELS_VALIDATED", True)
    monkeypatch.setattr(dispatch, "cupy_status", lambda: (False, "CuPy is not importable; pip install x"))
    t = _fake_cuda(torch.zeros(4))
    with pytest.warns(RuntimeWarning, match="CuPy is not importable"):
        assert dispatch.select_backend(t) == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert dispatch.select_backend(t) == "torch"


def test_exception_forced_cuda_without_cupy(monkeypatch):
    monkeypatch.setattr(
        dispatch, "cupy_status", lambda: (False, "CuPy is not importable; pip install diffcut-gpu[cuda12]")
    )
    with pytest.raises(ImportError, match=r"pip install diffcut-gpu\[cuda12\]"):
        dispatch.select_backend(_fake_cuda(torch.zeros(4)), "cuda")
    monkeypatch.setattr(dispatch, "cupy_status", lambda: (True, "ok"))
    assert dispatch.select_backend(_fake_cuda(torch.zeros(4)), "cuda") == "cuda"


def test_imports_without_cupy():
    """``import diffcut_gpu.kernels`` works, and says how to install CuPy, when CuPy cannot be imported."""
    code = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "cupy" or name.startswith("cupy."):
                    raise ImportError("blocked for the test")
        sys.meta_path.insert(0, Block())
        import diffcut_gpu.kernels as K
        assert "cupy" not in sys.modules
        usable, reason = K.cupy_status()
        assert not usable and "pip install diffcut-gpu[cuda" in reason, reason
        try:
            K.get_kernel("renorm_rows", __import__("torch").float32)
        except ImportError as exc:
            assert "pip install diffcut-gpu[cuda" in str(exc)
        else:
            raise AssertionError("get_kernel without CuPy must raise ImportError")
        print("ok")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr


def test_every_cu_file_is_package_data():
    in_repo = sorted(p.name for p in (REPO / "csrc").glob("*.cu"))
    assert in_repo and loader.source_files() == in_repo
    setup = (REPO / "setup.py").read_text()
    assert '"diffcut_gpu.csrc": ["*.cu", "*.cuh"]' in setup
    for name in in_repo:
        text = loader.source_text(name)
        assert text.count("// ---- begin common.cuh") == 1
        assert "#pragma once" in text


def test_entry_names():
    assert loader.entry_name("lanczos_fused", torch.bfloat16) == "lanczos_fused_bf16"
    assert loader.entry_name("gather_subgraphs", torch.float64) == "gather_subgraphs_f64"
    assert loader.entry_name("lanczos_step") == "lanczos_step"
    with pytest.raises(ValueError, match="kernel: expected one of"):
        loader.entry_name("lanczos")
    with pytest.raises(ValueError, match=r"dtype: expected one of .* got torch\.float64"):
        loader.entry_name("lanczos_fused", torch.float64)
    with pytest.raises(ValueError, match="dtype: expected None"):
        loader.entry_name("sweep_scan", torch.float32)
    with pytest.raises(FileNotFoundError, match="filename"):
        loader.source_text("missing.cu")


def test_aligned_rows():
    W = torch.rand(2, 8, 8, dtype=torch.float16)
    same, ld = aligned_rows(W)
    assert same is W and ld == 8
    odd = torch.rand(3, 13, 13, dtype=torch.float16)
    padded, ld = aligned_rows(odd)
    assert ld == 16 and padded.stride(1) == 16 and torch.equal(padded, odd)
    view = torch.rand(2, 12, 12)[:, 1:, 1:]  # unaligned start and odd width
    padded, ld = aligned_rows(view)
    assert ld == 12 and padded.data_ptr() % 16 == 0 and torch.equal(padded, view)


def test_sizes_tensor():
    assert torch.equal(sizes_tensor(None, 3, 7, torch.device("cpu")), torch.full((3,), 7))
    assert torch.equal(
        sizes_tensor(torch.tensor([-1, 4, 9], dtype=torch.int32), 3, 7, torch.device("cpu")),
        torch.tensor([0, 4, 7]),
    )
    with pytest.raises(ValueError, match=r"sizes: expected an integer tensor of shape \(3,\)"):
        sizes_tensor(torch.ones(3), 3, 7, torch.device("cpu"))


def test_strategy_model():
    assert choose_strategy(128, 1024, 2, 132) == "fused"  # a full batch: one graph per SM
    assert choose_strategy(1, 4096, 2, 132) == "tiled"  # one large graph: spread it over the GPU
    assert choose_strategy(64, 64, 4, 132) == "fused"  # small graphs: launches would dominate


def test_exception_wrappers_reject_cpu_tensors():
    from diffcut_gpu.kernels import (
        gather_subgraphs_cuda,
        lanczos_fiedler_cuda,
        power_walk_cuda,
        record_attention_cuda,
        sweep_cut_cuda,
    )

    W = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="W: expected a CUDA tensor"):
        lanczos_fiedler_cuda(W)
    with pytest.raises(ValueError, match="W: expected a CUDA tensor"):
        sweep_cut_cuda(W, torch.rand(2, 8))
    with pytest.raises(ValueError, match="W: expected a CUDA tensor"):
        gather_subgraphs_cuda(
            W,
            torch.zeros(1, dtype=torch.long),
            torch.zeros(1, 4, dtype=torch.long),
            torch.ones(1, dtype=torch.long),
        )
    with pytest.raises(ValueError, match="P: expected a CUDA tensor"):
        power_walk_cuda(torch.softmax(W, -1), 2)
    with pytest.raises(ValueError, match="q: expected a CUDA tensor"):
        record_attention_cuda(torch.rand(1, 1, 4, 4), torch.rand(1, 1, 4, 4), 0.5, None, accumulate=False)
