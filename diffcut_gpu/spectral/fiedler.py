"""Fiedler vectors of a batch of graphs: the front door, its input checks, and the dense reference.

For W (B, N, N) symmetric and non-negative with degrees d = W.sum(-1), the relaxed Normalized Cut
(Shi & Malik 2000) is the generalized problem (D - W) x = lam D x. It is solved through the normalized
adjacency A = D^-1/2 W D^-1/2 (spectrum in [-1, 1], top eigenpair (1, u0 = sqrt(d) / ||sqrt(d)||)):
mu = second-largest eigenvalue of A, v its unit eigenvector orthogonal to u0, lam = 1 - mu and
x = D^-1/2 v. The sign of x is fixed so that its largest-|.| entry is positive (ties: lowest index).

Two solvers with one signature ``(W, sizes, tol, max_iter) -> FiedlerResult``:

* ``eigh_fiedler``: dense ``torch.linalg.eigh`` of A, the reference (and the fast path for small N);
* ``lanczos_fiedler`` (``lanczos.py``): batched thick-restart Lanczos, for large N.

Both run without autograd: the Fiedler vector feeds discrete cuts, not gradients.

Degenerate inputs never give NaN: nodes of zero degree (relative to the largest, see
``normalized_scaling``) are isolated, are left out of A and get x = 0; a graph with fewer than two
non-isolated nodes has lam = 0 and x = 0. A disconnected graph has lam = 0 and x is some null vector
orthogonal to u0 (any one is valid).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

from .._checks import check_batched_square, check_choice, check_graph_values, check_int, check_sizes
from .._types import FiedlerResult, LanczosParams
from ..kernels import dispatch
from .lanczos import apply_normalized, fix_sign, lanczos_fiedler, normalized_scaling

__all__ = [
    "EIGH_MAX_N",
    "FiedlerResult",
    "LanczosParams",
    "eigh_fiedler",
    "fiedler",
    "lanczos_fiedler",
    "rescue_stuck",
    "solve_fiedler",
    "solve_fiedler_deferred",
]

EIGH_MAX_N = 224
"""``method="auto"`` takes dense eigh up to this (padded) N, Lanczos above.

Measured on CPU (``OMP_NUM_THREADS=1 python -m benchmarks.bench_fiedler --crossover``, float32,
attention-like region graphs): eigh is faster up to N = 256 for one graph, up to N ~ 150 for batches of
16-64 (eigh costs ~1 ns B N^3; a Lanczos block step costs ~0.15-0.25 ms of fixed overhead plus the
matvec, 15-35 steps on these clustered spectra). The recursion's buckets mostly hold 1-5 sub-graphs, so
the switch sits between the two. It depends on the padded width only, never on the batch, so that a
graph gets the same solver whatever it is batched with. Other devices will want their own rule
(kernels/dispatch.py).
"""

METHODS = ("auto", "eigh", "lanczos")


@torch.no_grad()
def eigh_fiedler(W: Tensor, sizes: Tensor | None = None, tol: float = 1e-5,
                 max_iter: int | None = None) -> FiedlerResult:
    """Fiedler pairs by dense ``torch.linalg.eigh`` of A (the reference solver; skips input checks).

    Args:
        W: (B, N, N) as for ``lanczos_fiedler``: compute dtype, finite everywhere, padding ignored.
        sizes: (B,) valid block sizes, or None.
        tol: only sets ``converged`` (residual <= tol).
        max_iter: unused (same signature as ``lanczos_fiedler``).

    The eigen-solve runs on A - 3 u0 u0^T with excluded nodes (padding, isolated) placed at -2 on the
    diagonal: both sit below the spectrum [-1, 1], so the top eigenpair is the Fiedler pair of the valid
    block and padding cannot change the answer. Cost O(B N^3).
    """
    s, u0, active = normalized_scaling(W, sizes)
    A = s.unsqueeze(-1) * W * s.unsqueeze(-2)
    A = A - 3 * u0.unsqueeze(-1) * u0.unsqueeze(-2)
    A.diagonal(dim1=-2, dim2=-1).sub_(2 * (~active).to(W.dtype))
    theta, Y = torch.linalg.eigh(A)
    mu = theta[:, -1]
    v = Y[:, :, -1] * active
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(W.dtype).tiny)
    residual = (apply_normalized(W, s, v) - mu.unsqueeze(-1) * v).norm(dim=-1)
    solvable = active.sum(-1) >= 2
    zero = W.new_zeros(())
    lam = torch.where(solvable, (1 - mu).clamp(0, 2), zero)
    x = torch.where(solvable.unsqueeze(-1), fix_sign(s * v), zero)
    residual = torch.where(solvable, residual, zero)
    iterations = torch.zeros(W.shape[0], dtype=torch.int64, device=W.device)
    return FiedlerResult(lam, x, residual, iterations, residual <= tol)


def solve_fiedler_deferred(W: Tensor, *, method: str = "auto", sizes: Tensor | None = None,
                           params: LanczosParams, stored: Tensor | None = None,
                           backend: str | None = None) -> tuple[FiedlerResult, bool]:
    """``solve_fiedler`` without the float64 rescue: (result, whether a rescue is due).

    A rescue is due for a float32 torch Lanczos solve (it then ran ``FLOAT32_CYCLES`` cycles when
    ``max_iter`` is None); the caller counts the unconverged graphs (one host read, which the recursion
    shares among all buckets of a level) and passes the count to ``rescue_stuck``. Makes no host read.
    """
    if method == "eigh" or (method == "auto" and W.shape[-1] <= EIGH_MAX_N):
        return eigh_fiedler(W, sizes, params.tol), False
    stored = W if stored is None or stored.dtype == torch.float64 else stored
    impl = dispatch.select("fiedler", stored, backend)
    if method == "lanczos" and impl not in ("torch", "cuda"):
        impl = "torch"  # "lanczos" names the algorithm: the torch twin wherever the kernel is not taken
    if impl == "cuda":  # reads fp16/bf16 storage as it is; same budget meaning (passes over W)
        kernel = dispatch.implementation("fiedler", "cuda")
        budget = params.step_budget(W.shape[-1], rescued=False)
        poll = dispatch.sync_policy(W.device, params.sync) == "host"
        return kernel(stored, sizes, params.tol, budget, krylov_dim=params.krylov_dim, keep=params.keep,
                      check_values=False, poll=poll), False
    if impl != "torch":  # another registered solver with the common signature
        return dispatch.implementation("fiedler", impl)(W, sizes, params.tol, params.max_iter), False
    rescue = params.float64_rescue and W.dtype == torch.float32
    budget = params.step_budget(W.shape[-1], rescued=rescue)
    return lanczos_fiedler(W, sizes, params=params.with_(max_iter=budget)), rescue


def rescue_stuck(W: Tensor, sizes: Tensor | None, info: FiedlerResult, stuck: int,
                 params: LanczosParams) -> FiedlerResult:
    """Re-solve in float64 the ``stuck`` graphs of a float32 solve that did not reach ``params.tol``.

    ``stuck`` is their number, read on the host by the caller; which graphs they are is found on the
    device (a stable sort puts them first), so this makes no host read. The residual is always the true
    one, so the result meets ``tol`` wherever float64 can; ``iterations`` adds the float32 steps.
    """
    if stuck == 0:
        return info
    ids = torch.sort(info.converged.to(torch.uint8), stable=True).indices[:stuck]  # unconverged, ascending
    sub_sizes = None if sizes is None else sizes[ids]
    redo = lanczos_fiedler(W[ids].double(), sub_sizes, params=params)
    fields = [f.clone() for f in info]
    for field, value in zip(fields, redo):
        field[ids] = value.to(field.dtype)
    fields[3][ids] += params.step_budget(W.shape[-1], rescued=True)  # the float32 steps before the rescue
    return FiedlerResult(*fields)


def solve_fiedler(W: Tensor, *, method: str = "auto", sizes: Tensor | None = None,
                  params: LanczosParams | None = None, stored: Tensor | None = None,
                  backend: str | None = None) -> FiedlerResult:
    """``fiedler`` without input checks, for graphs already known to be valid (the recursion's
    sub-graphs of a checked graph): W in float32/float64, sizes int64 on W's device or None.
    ``stored`` is the graph in its storage dtype (fp16/bf16) for the CUDA kernel, when different.
    A float32 Lanczos solve that stalls above tol is redone in float64 for those graphs (one host read
    of their number)."""
    params = LanczosParams() if params is None else params
    info, due = solve_fiedler_deferred(W, method=method, sizes=sizes, params=params, stored=stored,
                                       backend=backend)
    if not due:
        return info
    return rescue_stuck(W, sizes, info, int((~info.converged).sum()), params)


def fiedler(W: Tensor, *, method: str = "auto", tol: float = 1e-5, sizes: Tensor | None = None,
            max_iter: int | None = None, return_info: bool = False, backend: str | None = None,
            params: LanczosParams | None = None) -> tuple[Tensor, Tensor] | FiedlerResult:
    """Fiedler eigenpair (lam, x) of each graph in a (padded) batch.

    Args:
        W: (B, N, N) symmetric, non-negative graphs, N >= 2; fp16/bf16 are upcast to float32, float64
            stays float64. Only the valid block ``W[b, :sizes[b], :sizes[b]]`` is read for the answer.
        method: "eigh" (dense reference, O(B N^3)), "lanczos" (batched thick-restart block Lanczos, or
            its CUDA kernel) or "auto" (eigh for N <= EIGH_MAX_N, else the dispatch table's solver: SciPy
            ARPACK one graph at a time on CPU (``spectral/arpack.py``; ``max_iter`` does not apply
            there), Lanczos elsewhere).
        tol: target residual ||A v - mu v||_2 (A has norm 1); 1e-5 suits float32.
        sizes: (B,) integer valid block sizes in [2, N], or None for unpadded graphs.
        max_iter: most Lanczos block steps (passes over W) per graph and solve; None: the default budget
            of ``LanczosParams.max_iter``.
        return_info: return the full ``FiedlerResult`` instead of (lam, x).
        backend: "auto", "torch" or "cuda" for the Lanczos solve (None: ``$DIFFCUT_GPU_BACKEND``, else
            auto; see ``kernels.dispatch``).
        params: further Lanczos settings (``LanczosParams``: Krylov dimension, keep, block, float64
            rescue, sync policy); ``tol`` and ``max_iter`` above take precedence.

    Returns:
        (lam (B,), x (B, N)) in the compute dtype, or FiedlerResult(lam, x, residual, iterations,
        converged). x is 0 at padding and at isolated nodes. A float32 Lanczos solve that stalls above
        ``tol`` (clustered spectra at the float32 rounding floor) is redone in float64 for those graphs
        only. Graphs still unconverged keep their best Ritz pair; without ``return_info`` a
        RuntimeWarning reports them.

    Example:
        >>> W = torch.rand(4, 100, 100); W = W + W.transpose(1, 2)
        >>> lam, x = fiedler(W)          # (4,), (4, 100)
    """
    check_batched_square("W", W)
    check_choice("method", method, METHODS)
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < float("inf"):
        raise ValueError(f"tol: expected a positive finite float, got {tol!r}")
    if max_iter is not None:
        check_int("max_iter", max_iter, 1)
    if params is not None and not isinstance(params, LanczosParams):
        raise TypeError(f"params: expected a LanczosParams or None, got {type(params).__name__}")
    params = (params or LanczosParams()).with_(tol=tol, max_iter=max_iter)
    dispatch.requested_backend(backend)  # an unknown backend fails here, whatever the method
    b, n, _ = W.shape
    check_sizes(sizes, b, n, min_size=2)
    stored = W.detach()
    W = stored.to(torch.float64 if W.dtype == torch.float64 else torch.float32)
    if sizes is not None:
        sizes = sizes.to(device=W.device, dtype=torch.int64)
    if b == 0:
        empty = W.new_zeros(0)
        info = FiedlerResult(empty, W.new_zeros(0, n), empty, empty.long(), empty.bool())
        return info if return_info else (info.lam, info.x)
    W = check_graph_values("W", W, sizes)
    info = solve_fiedler(W, method=method, sizes=sizes, params=params, stored=stored, backend=backend)
    if return_info:
        return info
    if not bool(info.converged.all()):
        bad = ~info.converged
        warnings.warn(
            f"fiedler: {int(bad.sum())} of {b} graphs did not reach tol={tol:g} (worst residual "
            f"{float(info.residual[bad].max()):.3g}); raise max_iter, or tol (float32 residuals bottom out "
            "near 1e-6 to 1e-5 for large N), or pass return_info=True to inspect",
            RuntimeWarning,
            stacklevel=2,
        )
    return info.lam, info.x
