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


@pytest.mark.parametrize("validated", [False, True])
def test_auto_follows_kernels_validated(monkeypatch, validated):
    """``"auto"`` takes the kernels for CUDA tensors of a kernel dtype exactly when they are validated;
    CPU tensors and float64 always take torch, and ``"cuda"`` forces the kernels either way."""
    monkeypatch.setattr(dispatch, "cupy_status", lambda: (True, "ok"))
    monkeypatch.setattr(dispatch, "KERNELS_VALIDATED", validated)
    want = "cuda" if validated else "torch"
    assert dispatch.select_backend(_fake_cuda(torch.zeros(4))) == want
    assert dispatch.select_backend(_fake_cuda(torch.zeros(4, dtype=torch.float16))) == want
    assert dispatch.select_backend(_fake_cuda(torch.zeros(4, dtype=torch.float64))) == "torch"
    assert dispatch.select_backend(torch.zeros(4)) == "torch"
    assert dispatch.select_backend(_fake_cuda(torch.zeros(4)), "cuda") == "cuda"
    _caps(monkeypatch, (9, 0))
    for op in dispatch.OPS:
        assert dispatch.select(op, _fake_cuda(torch.zeros(2, 64, 64))) == want, op
        assert dispatch.select(op, _fake_cuda(torch.zeros(2, 64, 64)), "cuda") == "cuda", op
        assert dispatch.select(op, torch.zeros(2, 64, 64)) == dispatch.TABLE[op]["cpu"], op
        assert dispatch.select(op, torch.zeros(2, 64, 64), "torch") == "torch", op


def _caps(monkeypatch, capability=(9, 0), shared=227 * 1024):
    monkeypatch.setattr(dispatch, "device_caps", lambda t: (capability, shared))


def test_select_checks_what_each_kernel_supports(monkeypatch):
    monkeypatch.setattr(dispatch, "cupy_status", lambda: (True, "ok"))
    monkeypatch.setattr(dispatch, "KERNELS_VALIDATED", True)
    W = _fake_cuda(torch.zeros(2, 64, 64))
    # sm_75: attention (mma.m16n8k16) needs sm_80; the others run; bf16 storage needs sm_80 everywhere.
    _caps(monkeypatch, (7, 5))
    assert dispatch.select("attention", W) == "torch"
    with pytest.raises(ValueError, match=r"CUDA attention kernel cannot run .* compute capability 7\.5 is below 8\.0"):
        dispatch.select("attention", W, "cuda")
    assert dispatch.select("sweep", W) == "cuda"
    assert dispatch.select("sweep", _fake_cuda(torch.zeros(2, 64, 64, dtype=torch.bfloat16))) == "torch"
    _caps(monkeypatch, (9, 0), shared=48 * 1024)
    # sweep needs 16 * ceil(N / 4) bytes of shared memory: N = 16384 needs 64 KiB.
    assert dispatch.select("sweep", W, n=16384) == "torch"
    with pytest.raises(ValueError, match=r"sweep kernel cannot run .* 65536 bytes of shared memory"):
        dispatch.select("sweep", W, "cuda", n=16384)
    # The batch rides on gridDim.y (at most 65,535).
    assert dispatch.select("gather", W, n=32, batch=70_000) == "torch"
    with pytest.raises(ValueError, match="batch 70000 exceeds the grid limit 65535"):
        dispatch.select("gather", W, "cuda", n=32, batch=70_000)
    # No float64 sweep or Lanczos kernel; the gather has one, the renormalisation takes float32/float64.
    W64 = _fake_cuda(torch.zeros(2, 64, 64, dtype=torch.float64))
    assert dispatch.select("sweep", W64, "cuda", dtype=torch.float32) == "cuda"
    with pytest.raises(ValueError, match=r"dtype torch\.float64 is not one of"):
        dispatch.select("fiedler", W64, "cuda")
    assert dispatch.select("gather", W64, "cuda") == "cuda"
    with pytest.raises(ValueError, match="op: expected one of fiedler, sweep"):
        dispatch.select("eigh", W)


def test_wrappers_declare_supports():
    from diffcut_gpu.kernels import gather, lanczos, power, sweep

    ok = ((9, 0), 227 * 1024)
    for module in (gather, lanczos, power, sweep):
        assert module.supports(torch.float32, 256, 8, *ok) is None, module.__name__
    assert "float64" in sweep.supports(torch.float64, 256, 8, *ok)
    assert "float16" in power.supports(torch.float16, 256, 8, *ok)
    assert lanczos.supports(torch.bfloat16, 256, 8, (7, 0), 96 * 1024).startswith("compute capability 7.0")
    assert "shared memory" in lanczos.supports(torch.float32, 4096, 8, (9, 0), 8 * 1024)  # two 48 x 48 floats
    assert "shared memory" in gather.supports(torch.float32, 65536, 8, (9, 0), 200 * 1024)  # 4 bytes per column


def test_table_slot_for_another_cpu_solver(monkeypatch):
    """A CPU entry of the table names another implementation, which ``implementation`` imports."""
    assert dispatch.select("fiedler", torch.zeros(2, 8, 8)) == "arpack"  # the shipped CPU solver
    assert dispatch.implementation("fiedler", "arpack").__name__ == "arpack_fiedler"
    monkeypatch.setitem(dispatch.TABLE, "fiedler", {"cpu": "arpack", "cuda": "cuda"})
    monkeypatch.setitem(dispatch.IMPLEMENTATIONS, ("fiedler", "arpack"), "diffcut_gpu.spectral.fiedler:eigh_fiedler")
    assert dispatch.select("fiedler", torch.zeros(2, 8, 8)) == "arpack"
    assert dispatch.select("fiedler", torch.zeros(2, 8, 8), "torch") == "torch"
    from diffcut_gpu import fiedler
    from diffcut_gpu.spectral.fiedler import eigh_fiedler

    assert dispatch.implementation("fiedler", "arpack") is eigh_fiedler
    with pytest.raises(ValueError, match="nothing registered"):
        dispatch.implementation("sweep", "arpack")
    W = torch.rand(2, 300, 300, dtype=torch.float64)
    W = W + W.transpose(1, 2)
    lam = fiedler(W, method="auto", return_info=True)  # routed to the "arpack" slot: eigh here
    assert (lam.iterations == 0).all()
    lam = fiedler(W, method="lanczos", return_info=True)  # "lanczos" names the algorithm: the torch twin
    assert (lam.iterations > 0).all()


def test_sync_policy():
    assert dispatch.sync_policy(torch.device("cpu")) == "host"
    assert dispatch.sync_policy(torch.device("cuda", 0)) == "device"
    assert dispatch.sync_policy(torch.device("cpu"), "device") == "device"


def test_backend_argument_reaches_every_entry_point():
    from diffcut_gpu import DiffCut, RWNCut, fiedler, recursive_ncut, sweep_cut

    W = torch.rand(2, 16, 16)
    W = W + W.transpose(1, 2)
    x = torch.rand(2, 16)
    for call in (
        lambda b: fiedler(W, backend=b),
        lambda b: sweep_cut(W, x, backend=b),
        lambda b: recursive_ncut(W, backend=b),
        lambda b: RWNCut(backend=b),
        lambda b: DiffCut(torch.nn.Identity(), backend=b),
    ):
        with pytest.raises(ValueError, match=r"backend: expected one of auto, torch, cuda, got 'gpu'"):
            call("gpu")
    with pytest.raises(ValueError, match="backend: expected a CUDA tensor"):
        fiedler(torch.ones(2, 300, 300), method="lanczos", backend="cuda")
    with pytest.raises(ValueError, match="backend: expected a CUDA tensor"):
        sweep_cut(W, x, backend="cuda")
    with pytest.raises(ValueError, match="backend: expected a CUDA tensor"):
        recursive_ncut(W, backend="cuda", min_size=2)
    assert fiedler(W, backend="torch")[0].shape == (2,)


def test_recursion_runs_every_op_through_the_table(monkeypatch):
    """The recursion's gather, Lanczos and sweep all ask the dispatch, and run what it names: here a
    stand-in "cuda" sweep (the torch sweep under another name) that must see every bucket."""
    from diffcut_gpu import recursive_ncut, reversibilize
    from diffcut_gpu.spectral.sweep import sweep_cut_clean
    from tests.conftest import attention_like

    asked, swept = [], []
    select = dispatch.select

    def spy(op, tensor, backend=None, **kw):
        asked.append(op)
        return "cuda" if op == "sweep" else select(op, tensor, backend, **kw)

    def fake_sweep(W, x, sizes=None, *, min_side=1, check_values=True):
        swept.append(W.shape)
        assert check_values is False  # the recursion's graphs are checked already: no host read
        return sweep_cut_clean(W.float(), x, sizes, min_side=min_side)

    W = reversibilize(attention_like(2, 240, seed=1, temperature=6.0, dtype=torch.float32))
    ref = recursive_ncut(W, threshold=0.5, max_depth=3)
    monkeypatch.setattr(dispatch, "select", spy)
    monkeypatch.setitem(dispatch.IMPLEMENTATIONS, ("sweep", "cuda"), f"{__name__}:_FAKE_SWEEP")
    monkeypatch.setitem(globals(), "_FAKE_SWEEP", fake_sweep)
    seg = recursive_ncut(W, threshold=0.5, max_depth=3)
    assert {"gather", "fiedler", "sweep"} <= set(asked)
    assert len(swept) == asked.count("sweep") > 1
    assert torch.equal(seg.labels, ref.labels)


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
