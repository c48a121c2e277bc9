"""Small kernel cases for ``benchmarks/gpu_validate.sh``: sanitizer workloads and shared-memory band probes.

    python -m benchmarks.gpu_validate_cases sanitize OUT.json   # every kernel once, small, all dtypes
    python -m benchmarks.gpu_validate_cases probe OUT.json      # launches at the shared-memory band edges

``sanitize`` is what compute-sanitizer (memcheck, racecheck, synccheck, initcheck) runs: each kernel
family in each storage dtype, both Lanczos strategies, NaN-padded mixed sizes, odd attention shapes,
checked against the torch twins. ``probe`` launches each kernel just below and just above the sizes
where its shared memory crosses 48 KiB (the opt-in), e.g. fused Lanczos at N 2481-2688 for Krylov
dimension 48 (static + dynamic > 48 KiB while dynamic alone is not), and records per case whether it
ran and matched the torch twin. Needs a CUDA device and CuPy; writes JSON, prints one line per case.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from collections.abc import Callable

import torch

from diffcut_gpu.kernels import (
    gather_subgraphs_cuda,
    lanczos_fiedler_cuda,
    limits,
    record_attention_cuda,
    renormalize_rows_cuda,
    sweep_cut_cuda,
)

DEV = "cuda"


def _graph(b: int, n: int, seed: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    from diffcut_gpu.spectral.graph import reversibilize

    g = torch.Generator().manual_seed(seed)  # softmax of random rank-8 scores, as tests/conftest.attention_like
    q = torch.randn(b, n, 8, generator=g, dtype=torch.float64)
    k = torch.randn(b, n, 8, generator=g, dtype=torch.float64)
    P = torch.softmax(3 * q @ k.transpose(1, 2) / 8**0.5, -1)
    W = reversibilize(P)
    return (W / W.amax(dim=(-1, -2), keepdim=True)).to(device=DEV, dtype=dtype)


def _padded(sizes: list[int], seed: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(sizes)
    W = torch.full((len(sizes), n, n), float("nan"), device=DEV)
    for i, s in enumerate(sizes):
        W[i, :s, :s] = _graph(1, s, seed + i)[0]
    return W.to(dtype), torch.tensor(sizes, device=DEV)


def _lanczos_ok(W: torch.Tensor, sizes: torch.Tensor | None, res, tol: float = 5e-5) -> bool:
    from diffcut_gpu.spectral.fiedler import eigh_fiedler

    n = W.shape[-1]
    valid = torch.ones(W.shape[:2], dtype=torch.bool, device=DEV) if sizes is None else \
        torch.arange(n, device=DEV) < sizes.unsqueeze(1)
    block = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    clean = torch.where(block, W.double(), torch.zeros((), dtype=torch.float64, device=DEV))
    ref = eigh_fiedler(clean, sizes)
    return bool(((res.lam.double() - ref.lam).abs() <= tol).all())


def sanitize_cases() -> list[tuple[str, Callable[[], bool]]]:
    """(name, run) pairs: each runs kernels on small inputs and says whether they match the torch twin."""
    from diffcut_gpu.attention.probs import head_mean_attention_ref
    from diffcut_gpu.spectral.graph import power_walk
    from diffcut_gpu.spectral.subgraph import gather_subgraphs
    from diffcut_gpu.spectral.sweep import sweep_cut

    cases = []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        tag = str(dtype).replace("torch.", "")
        for strategy in ("fused", "tiled"):
            def lz(dtype=dtype, strategy=strategy):
                W, sizes = _padded([40, 17, 2, 33], 3, dtype)
                res = lanczos_fiedler_cuda(W, sizes, krylov_dim=12, keep=4, strategy=strategy)
                return bool(res.converged.all()) and _lanczos_ok(W, sizes, res)
            cases.append((f"lanczos_{strategy}_{tag}", lz))

        def sw(dtype=dtype):
            W, sizes = _padded([37, 20, 1, 9], 5, dtype)
            x = torch.randn(4, 37, device=DEV, generator=torch.Generator(device=DEV).manual_seed(0))
            ncut, mask = sweep_cut_cuda(W, x, sizes, min_side=2)
            ref_ncut, ref_mask = sweep_cut(torch.nan_to_num(W.double(), nan=0.0), x, sizes, min_side=2)
            return bool(torch.allclose(ncut, ref_ncut, rtol=1e-5, atol=1e-9)) and torch.equal(mask, ref_mask)
        cases.append((f"sweep_{tag}", sw))

        def ga(dtype=dtype):
            W = _graph(2, 41, 7, dtype)
            node_index = torch.stack([torch.randperm(41, device=DEV)[:13] for _ in range(3)])
            args = (torch.tensor([0, 1, 1], device=DEV), node_index, torch.tensor([13, 5, 1], device=DEV))
            ref = gather_subgraphs(W.cpu(), *[a.cpu() for a in args]).to(DEV)
            return torch.equal(gather_subgraphs_cuda(W, *args), ref)
        cases.append((f"gather_{tag}", ga))

        def at(dtype=dtype):
            g = torch.Generator(device=DEV).manual_seed(1)
            q = (2 * torch.randn(2, 3, 70, 24, device=DEV, generator=g)).to(dtype)
            k = (2 * torch.randn(2, 3, 65, 24, device=DEV, generator=g)).to(dtype)
            out = record_attention_cuda(q, k, 24**-0.5, accumulate=False)
            return bool(torch.allclose(out.double(), head_mean_attention_ref(q, k, scale=24**-0.5), atol=1e-5, rtol=0))
        cases.append((f"attention_{tag}", at))

    for dtype in (torch.float32, torch.float64):
        def pw(dtype=dtype):
            P = torch.softmax(torch.randn(2, 19, 19, device=DEV, dtype=torch.float64), -1).to(dtype)
            out = renormalize_rows_cuda(torch.bmm(P, P))
            ref = power_walk(P.cpu(), 2).to(DEV)
            return bool(torch.allclose(out, ref, atol=1e-6, rtol=0))
        cases.append((f"renorm_rows_{str(dtype).replace('torch.', '')}", pw))
    return cases


def probe_cases() -> list[tuple[str, Callable[[], bool]]]:
    """Launches at the edges of the bands where a kernel's shared memory crosses the 48 KiB default."""
    from diffcut_gpu.attention.probs import head_mean_attention_ref
    from diffcut_gpu.spectral.sweep import sweep_cut

    cases = []
    for n in (2480, 2481, 2560, 2688, 2689):  # fused Lanczos, m = 48: static + dynamic > 48 KiB from 2481
        def lz(n=n):
            W = _graph(1, n, 11)
            a = lanczos_fiedler_cuda(W, strategy="fused", max_iter=60)
            b = lanczos_fiedler_cuda(W, strategy="tiled", max_iter=60)
            return bool(torch.allclose(a.lam, b.lam, atol=1e-6, rtol=0))
        need = limits.lanczos_shared_memory(n, 48, "fused")
        cases.append((f"lanczos_fused_m48_n{n}_smem{need}", lz))
    for n in (12288, 12289):  # sweep rows / gather: N ints, 48 KiB at 12288
        def sw(n=n):
            W = torch.rand(1, n, n, device=DEV, dtype=torch.float16)
            W = ((W + W.transpose(1, 2)) / 2).contiguous()
            x = torch.randn(1, n, device=DEV)
            ncut, mask = sweep_cut_cuda(W, x, check_values=False)
            ref_ncut, ref_mask = sweep_cut(W.float(), x)
            return bool(torch.allclose(ncut, ref_ncut, rtol=1e-4)) and bool((mask == ref_mask).float().mean() > 0.999)
        cases.append((f"sweep_n{n}_smem{limits.sweep_shared_memory(n)}", sw))

        def ga(n=n):
            W = torch.rand(1, n + 3, n + 3, device=DEV, dtype=torch.float16)
            ids = torch.randperm(n + 3, device=DEV)[:n].unsqueeze(0)
            zero = torch.zeros(1, dtype=torch.long, device=DEV)
            out = gather_subgraphs_cuda(W, zero, ids, torch.tensor([n], device=DEV))
            return torch.equal(out[0], W[0][ids[0]][:, ids[0]])
        cases.append((f"gather_n{n}_smem{limits.gather_shared_memory(n)}", ga))
    for d in (94, 96, 256):  # float32 attention: Q and K tiles with an odd pitch
        def at(d=d):
            g = torch.Generator(device=DEV).manual_seed(d)
            q = torch.randn(1, 2, 70, d, device=DEV, generator=g)
            out = record_attention_cuda(q, q, d**-0.5, accumulate=False)
            return bool(torch.allclose(out.double(), head_mean_attention_ref(q, q, scale=d**-0.5), atol=1e-5, rtol=0))
        cases.append((f"attention_f32_d{d}_smem{limits.attention_shared_memory(d, torch.float32)}", at))
    return cases


def run(cases: list[tuple[str, Callable[[], bool]]]) -> list[dict]:
    rows = []
    for name, fn in cases:
        start = time.perf_counter()
        try:
            ok = bool(fn())
            torch.cuda.synchronize()
            row = {"case": name, "status": "ok" if ok else "mismatch"}
        except Exception as exc:  # a failed launch is a result here, not a crash
            row = {"case": name, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:500],
                   "trace": traceback.format_exc()[-2000:]}
        row["seconds"] = round(time.perf_counter() - start, 3)
        print(f"{row['status']:8s} {row['seconds']:7.2f}s  {name}  {row.get('error', '')}", flush=True)
        rows.append(row)
    return rows


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("sanitize", "probe"):
        print(__doc__)
        return 2
    if not torch.cuda.is_available():
        print("gpu_validate_cases: no CUDA device")
        return 2
    rows = run(sanitize_cases() if sys.argv[1] == "sanitize" else probe_cases())
    props = torch.cuda.get_device_properties(0)
    payload = {"what": sys.argv[1], "device": props.name, "capability": list(torch.cuda.get_device_capability(0)),
               "smem_optin": getattr(props, "shared_memory_per_block_optin", None), "cases": rows}
    with open(sys.argv[2], "w") as f:
        json.dump(payload, f, indent=2)
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
