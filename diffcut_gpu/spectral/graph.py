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


def stationary_distribution(P: Tensor, *, tol: float = 1e-10, max_iter: int = 10_000) -> Tensor:
    """Stationary distribution of a batch of row-stochastic matrices.

    Args:
        P: (B, N, N) transition matrices, rows sum to 1.
        tol: L1 tolerance on ||pi P - pi||_1 (never below what the precision of P allows).
        max_iter: most power-iteration steps of the fallback.

    Returns:
        pi: (B, N), non-negative, sums to 1, pi^T P = pi^T.

    For an irreducible chain, pi solves the non-singular system pi^T (I - P + 1 1^T) = 1^T: one batched
    LU solve in float64 (cheap next to the eigen-solves that follow). Chains whose system is singular
    (reducible: disconnected graphs) or whose solution is not a distribution fall back to power iteration
    on the lazy walk (I + P) / 2, started from the uniform distribution, which converges to a valid
    stationary distribution in every case.
    """
    check_transition("P", P, min_nodes=1)
    dtype = _compute_dtype(P)
    b, n, _ = P.shape
    if b == 0:
        return P.new_zeros((0, n), dtype=dtype)
    p64 = P.to(torch.float64)
    eye = torch.eye(n, dtype=torch.float64, device=P.device)
    system = (eye - p64 + 1.0).transpose(-1, -2)
    rhs = torch.ones(b, n, 1, dtype=torch.float64, device=P.device)
    try:
        sol, info = _solve_batch(system, rhs)
    except RuntimeError:  # a LAPACK failure: take the robust path
        return _power_iteration(p64, tol=tol, max_iter=max_iter).clamp_min(0).to(dtype)
    pi = sol.squeeze(-1)
    residual = (torch.bmm(pi.unsqueeze(1), p64).squeeze(1) - pi).abs().sum(-1)
    # The rows of P sum to 1 only to the precision of its dtype, and so does pi^T P = pi^T.
    limit = max(tol, 64 * torch.finfo(P.dtype).eps * n**0.5)
    ok = (info == 0) & torch.isfinite(pi).all(-1) & (pi > -limit).all(-1) & (residual < limit)
    if not bool(ok.all()):
        pi = torch.where(ok.unsqueeze(-1), pi, _power_iteration(p64, tol=tol, max_iter=max_iter))
    pi = pi.clamp_min(0)
    return (pi / pi.sum(-1, keepdim=True)).to(dtype)


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
