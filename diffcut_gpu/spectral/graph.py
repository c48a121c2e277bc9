"""Graphs for Normalized Cuts: from a random walk (attention) or from token features.

All functions are batched over a leading dimension B and run on the device of their input.

* ``stationary_distribution(P)``: pi with pi^T P = pi^T.
* ``reversibilize(P)``: W = (Pi P + P^T Pi) / 2, the symmetric graph whose NCut is the walk's escape
  probability (Meila & Shi 2001).
* ``symmetrize(P)``: W = (P + P^T) / 2.
* ``power_walk(P, k)``: the k-step walk P^k.
* ``cosine_affinity(F, alpha)``: DiffCut's W = ((cos - min) / (max - min))^alpha.
* ``attention_row_affinity(P, alpha)``: the same, using attention rows as token descriptors.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import check_batched_square, check_finite, check_int, check_tensor, check_transition
from .._power import power_by_squaring
from ..kernels import dispatch

__all__ = [
    "attention_row_affinity",
    "cosine_affinity",
    "power_by_squaring",
    "power_walk",
    "reversibilize",
    "stationary_distribution",
    "symmetrize",
]


def _compute_dtype(x: Tensor) -> torch.dtype:
    """Input dtype, but never below float32 (fp16/bf16 are storage formats here)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def stationary_distribution(P: Tensor, *, tol: float = 1e-12, max_iter: int = 10_000) -> Tensor:
    """Stationary distribution of a batch of row-stochastic matrices.

    Args:
        P: (B, N, N) transition matrices, rows sum to 1 (to the precision of their dtype, or of the data
            they were computed from: a float64 copy of float32 attention is fine).
        tol: L1 tolerance on ||pi P - pi||_1 / ||pi||_1 (never below what float64 allows, 64 eps sqrt(N)).
        max_iter: most power-iteration steps of the last-resort fallback.

    Returns:
        pi: (B, N), non-negative, sums to 1, pi^T P = pi^T.

    The chain is first copied to float64 with its rows renormalised to sum to 1, so that float32 data (or
    float64 data computed in float32) is an exactly stochastic chain in float64 and its residual can be
    judged at float64 precision. pi then solves pi^T (I - P) + (1^T pi) 1^T / N = 1^T / N, a non-singular
    system for an irreducible chain, by mixed-precision restarted GMRES: float32 Krylov sweeps corrected
    by float64 residuals, started from the column sums 1^T P / N (one walk step from uniform). On
    attention graphs (second eigenvalue ~0.6-0.7) it converges in 2-3 sweeps of 10 float32 products, ~10x
    cheaper than the dense float64 LU. Chains it does not solve to ``tol`` go to the LU solve of the same
    system, and chains whose system is singular (reducible: disconnected graphs) or whose LU solution is
    not a distribution fall back to power iteration on the lazy walk (I + P) / 2, started from the
    uniform distribution, which converges to a valid stationary distribution in every case.
    """
    check_transition("P", P, min_nodes=1)
    dtype = _compute_dtype(P)
    b, n, _ = P.shape
    if b == 0:
        return P.new_zeros((0, n), dtype=dtype)
    p64 = P.to(torch.float64)
    inv_rows = 1.0 / p64.sum(-1)  # the chain is diag(inv_rows) P: exactly stochastic in float64
    p32 = P if P.dtype == torch.float32 else P.to(torch.float32)
    limit = max(tol, 64 * torch.finfo(torch.float64).eps * n**0.5)
    pi, residual = _stationary_gmres(p64, p32, inv_rows, limit)
    ok = residual <= limit
    if not bool(ok.all()):
        todo = (~ok).nonzero().squeeze(1)
        chains = p64[todo] * inv_rows[todo].unsqueeze(-1)
        pi[todo] = _stationary_lu(chains, limit, tol, max_iter)
    pi = pi.clamp_min(0)
    return (pi / pi.sum(-1, keepdim=True)).to(dtype)


def _left(x: Tensor, P: Tensor, inv_rows: Tensor) -> Tensor:
    """x^T diag(inv_rows) P for row vectors x (B, N): one step of the row-renormalised walk."""
    return torch.bmm((x * inv_rows).unsqueeze(1), P).squeeze(1)


def _residual_l1(P: Tensor, pi: Tensor, inv_rows: Tensor | None = None) -> Tensor:
    """||pi^T diag(inv_rows) P - pi^T||_1 / ||pi||_1 per chain (B,) (inv_rows None: P as given)."""
    step = torch.bmm(pi.unsqueeze(1), P).squeeze(1) if inv_rows is None else _left(pi, P, inv_rows)
    return (step - pi).abs().sum(-1) / pi.abs().sum(-1)


GMRES_STEPS = 10
"""Krylov dimension of one float32 sweep: reduces the residual ~1e-6x on attention graphs."""

GMRES_SWEEPS = 4
"""Most sweeps (each corrected by a float64 residual) before the LU fallback."""


def _stationary_gmres(P: Tensor, p32: Tensor, inv_rows: Tensor, limit: float) -> tuple[Tensor, Tensor]:
    """pi (B, N) float64 by restarted mixed-precision GMRES on pi^T M = 1^T / N, M = I - P + 1 1^T / N, and
    its L1 residual (B,). The rank-one term moves the eigenvalue 0 of I - P to 1 without touching the
    others (1 is P's right eigenvector), so M is non-singular for an irreducible chain. Every chain runs
    the same number of sweeps until all pass ``limit`` (a chain's answer does not depend on its batch:
    every operation is per chain). P (B, N, N) float64 and p32 its float32 copy (the same object for
    float32 input), inv_rows (B, N) float64 the reciprocal row sums of the chain diag(inv_rows) P."""
    b, n, _ = P.shape
    inv32 = inv_rows.to(torch.float32)
    x = _left(P.new_full((b, n), 1.0 / n), P, inv_rows)  # 1^T P / N, one walk step from uniform
    step = _left(x, P, inv_rows)
    residual = (step - x).abs().sum(-1) / x.abs().sum(-1)
    for _ in range(GMRES_SWEEPS):
        if bool((residual <= limit).all()):
            break
        r = 1.0 / n - (x - step + x.sum(-1, keepdim=True) / n)  # float64 residual of x^T M = 1^T / N
        scale = r.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
        d = _gmres32(p32, inv32, (r / scale).to(torch.float32), GMRES_STEPS)
        x = x + scale * d.to(torch.float64)
        step = _left(x, P, inv_rows)
        residual = (step - x).abs().sum(-1) / x.abs().sum(-1)
    return x, torch.where(torch.isfinite(residual), residual, torch.inf)


def _gmres32(P: Tensor, inv_rows: Tensor, r: Tensor, steps: int) -> Tensor:
    """GMRES(steps) from 0 for d^T M = r^T (row vectors, float32, batched): the correction of one sweep."""
    b, n, _ = P.shape
    V = r.new_zeros(b, steps + 1, n)
    H = r.new_zeros(b, steps + 1, steps)
    beta = r.norm(dim=-1)
    tiny = torch.finfo(r.dtype).tiny
    V[:, 0] = r / beta.clamp_min(tiny).unsqueeze(-1)
    for j in range(steps):
        v = V[:, j]
        w = v - _left(v, P, inv_rows) + v.sum(-1, keepdim=True) / n
        basis = V[:, : j + 1]
        for _ in range(2):  # classical Gram-Schmidt, twice
            c = torch.bmm(basis, w.unsqueeze(-1))
            w = w - torch.bmm(c.transpose(1, 2), basis).squeeze(1)
            H[:, : j + 1, j] += c.squeeze(-1)
        h = w.norm(dim=-1)
        H[:, j + 1, j] = h
        V[:, j + 1] = w / h.clamp_min(tiny).unsqueeze(-1)
    e1 = r.new_zeros(b, steps + 1, 1)
    e1[:, 0, 0] = beta
    y = torch.linalg.lstsq(H.double(), e1.double()).solution.to(r.dtype)  # (b, steps, 1)
    return torch.bmm(y.transpose(1, 2), V[:, :steps]).squeeze(1)


def _stationary_lu(p64: Tensor, limit: float, tol: float, max_iter: int) -> Tensor:
    """pi (B, N) float64 from the LU solve of pi^T (I - P + 1 1^T) = 1^T, power iteration where it fails."""
    b, n, _ = p64.shape
    eye = torch.eye(n, dtype=torch.float64, device=p64.device)
    system = (eye - p64 + 1.0).transpose(-1, -2)
    rhs = torch.ones(b, n, 1, dtype=torch.float64, device=p64.device)
    try:
        sol, info = _solve_batch(system, rhs)
    except RuntimeError:  # a LAPACK failure: take the robust path
        return _power_iteration(p64, tol=tol, max_iter=max_iter)
    pi = sol.squeeze(-1)
    ok = (info == 0) & torch.isfinite(pi).all(-1) & (pi > -limit).all(-1) & (_residual_l1(p64, pi) <= limit)
    if not bool(ok.all()):
        pi = torch.where(ok.unsqueeze(-1), pi, _power_iteration(p64, tol=tol, max_iter=max_iter))
    return pi


def _solve_batch(system: Tensor, rhs: Tensor) -> tuple[Tensor, Tensor]:
    """``torch.linalg.solve_ex`` over a batch; on CPU one matrix at a time.

    After any ``torch.set_num_threads`` call, the MKL batched LU of torch 2.13 (CPU) returns invalid pivots
    for large matrices (``Parameter 6 was incorrect on entry to DLASWP`` printed per matrix, then
    "Pivots given to lu_solve must all be greater or equal to 1"); single-matrix solves are unaffected
    and do the same flops, since a CPU gains nothing from batching matrices this large.
    """
    if system.device.type != "cpu":
        return torch.linalg.solve_ex(system, rhs)
    solved = [torch.linalg.solve_ex(a, r) for a, r in zip(system, rhs)]
    return torch.stack([x for x, _ in solved]), torch.stack([info for _, info in solved])


def _power_iteration(P: Tensor, *, tol: float, max_iter: int, check_every: int = 16) -> Tensor:
    """pi of the lazy walk (I + P)/2 (same stationary distribution, aperiodic) from uniform."""
    b, n, _ = P.shape
    pi = torch.full((b, n), 1.0 / n, dtype=P.dtype, device=P.device)
    for step in range(max_iter):
        nxt = 0.5 * (pi + torch.bmm(pi.unsqueeze(1), P).squeeze(1))
        if step % check_every == 0 and float((nxt - pi).abs().sum(-1).max()) < tol:
            return nxt
        pi = nxt
    return pi


def reversibilize(P: Tensor, pi: Tensor | None = None) -> Tensor:
    """Reversible graph of a random walk: W = (Pi P + P^T Pi) / 2 with Pi = diag(pi).

    Args:
        P: (B, N, N) row-stochastic transition matrices.
        pi: (B, N) stationary distribution; computed with ``stationary_distribution`` when None.

    Returns:
        W: (B, N, N) symmetric, non-negative, degrees W.sum(-1) = pi, total volume 1. For any split
        (S, S') the Shi-Malik NCut on W equals Pr(X1 in S' | X0 in S) + Pr(X1 in S | X0 in S') for the
        stationary walk: the probability that one step escapes each side.

    Example:
        >>> P = torch.softmax(torch.randn(2, 16, 16), -1)
        >>> W = reversibilize(P)
        >>> torch.allclose(W.sum(-1), stationary_distribution(P), atol=1e-6)
        True
    """
    dtype = _compute_dtype(P)
    if pi is None:
        pi = stationary_distribution(P)
    else:
        check_transition("P", P, min_nodes=1)
        check_tensor("pi", pi)
        if pi.shape != P.shape[:2]:
            raise ValueError(f"pi: expected shape {tuple(P.shape[:2])}, got {tuple(pi.shape)}")
        check_finite("pi", pi)
    flow = pi.to(dtype).unsqueeze(-1) * P.to(dtype)
    return 0.5 * (flow + flow.transpose(-1, -2))


def symmetrize(P: Tensor) -> Tensor:
    """Plain symmetrization W = (P + P^T) / 2 of (B, N, N) matrices (degrees are not pi)."""
    check_batched_square("P", P, min_nodes=1)
    check_finite("P", P)
    p = P.to(_compute_dtype(P))
    return 0.5 * (p + p.transpose(-1, -2))


def power_walk(P: Tensor, k: int, *, backend: str | None = None) -> Tensor:
    """k-step transition matrices P^k by repeated squaring, rows renormalised after every product.

    Args:
        P: (B, N, N) row-stochastic.
        k: integer >= 1. Larger k merges tokens that reach each other in k steps: coarser segments.
        backend: "auto", "torch" or "cuda" for the row renormalisation (``kernels.dispatch``).

    Returns:
        (B, N, N) row-stochastic, in the compute dtype (float32, or float64 for float64 input).

    Renormalising keeps rounding from drifting the row sums over log2(k) products; in exact arithmetic
    it changes nothing. The CUDA backend fuses that renormalisation into one kernel.
    """
    check_int("k", k, 1)
    check_transition("P", P, min_nodes=1)
    impl = dispatch.select("renormalize", P, backend, dtype=_compute_dtype(P))
    renormalize = dispatch.implementation("renormalize", "cuda") if impl == "cuda" else None
    return power_by_squaring(P, k, renormalize)


def _minmax_power(sim: Tensor, alpha: float) -> Tensor:
    """((sim - min) / (max - min))^alpha per matrix; a constant matrix maps to all ones."""
    lo = sim.amin(dim=(-1, -2), keepdim=True)
    hi = sim.amax(dim=(-1, -2), keepdim=True)
    span = hi - lo
    flat = span <= torch.finfo(sim.dtype).eps * hi.abs().clamp_min(1.0)
    scaled = torch.where(flat, torch.ones_like(sim), (sim - lo) / torch.where(flat, torch.ones_like(span), span))
    return scaled.clamp(0, 1).pow(alpha)


def _check_alpha(alpha: float) -> None:
    if not (isinstance(alpha, (int, float)) and alpha > 0):
        raise ValueError(f"alpha: expected a number > 0, got {alpha!r}")


def cosine_affinity(F: Tensor, alpha: float = 10.0) -> Tensor:
    """DiffCut's feature graph W = ((cos - min) / (max - min))^alpha.

    Args:
        F: (B, N, C) token features.
        alpha: sharpening exponent (DiffCut uses 10); larger alpha keeps only the strongest affinities.

    Returns:
        W: (B, N, N) symmetric in [0, 1], min-max taken per image. Features with no structure (all
        cosines equal) give W = 1 everywhere: a graph with nothing to cut.
    """
    check_tensor("F", F)
    if F.ndim != 3:
        raise ValueError(f"F: expected token features of shape (B, N, C), got {tuple(F.shape)}")
    if F.shape[1] < 2 or F.shape[2] < 1:
        raise ValueError(f"F: expected at least 2 tokens and 1 channel, got {tuple(F.shape)}")
    check_finite("F", F)
    _check_alpha(alpha)
    f = torch.nn.functional.normalize(F.to(_compute_dtype(F)), dim=-1)
    sim = torch.bmm(f, f.transpose(-1, -2))
    return _minmax_power(0.5 * (sim + sim.transpose(-1, -2)), alpha)


def attention_row_affinity(P: Tensor, alpha: float = 1.0) -> Tensor:
    """Graph from the similarity of attention rows: tokens that attend alike are alike.

    Args:
        P: (B, N, N) row-stochastic attention.
        alpha: sharpening exponent of the min-max-scaled cosine.

    Returns:
        W: (B, N, N) = cosine_affinity(P, alpha), i.e. each token described by its attention row.
    """
    check_transition("P", P)
    return cosine_affinity(P, alpha)
