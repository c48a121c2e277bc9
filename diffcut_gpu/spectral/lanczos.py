"""Batched thick-restart block Lanczos for the Fiedler pair of a batch of graphs (torch reference path).

The Fiedler pair of W (B, N, N) is the second-largest eigenpair (mu, v) of the normalized adjacency
A = D^-1/2 W D^-1/2, whose spectrum lies in [-1, 1] and whose top eigenvector u0 = sqrt(d) / ||sqrt(d)||
is known. Lanczos therefore runs on u0's orthogonal complement: u0 is removed from the start vectors
and from every new vector, so the largest Ritz value converges to mu. All B graphs advance together
with ``bmm``. Under the ``"host"`` sync policy (CPU) the host reads convergence flags at checkpoints
and stops early; under ``"device"`` (GPU) it runs a fixed number of steps, decides convergence per graph
with masks on the device, and reads nothing (see ``LanczosParams.sync``).

For every graph at once, with a block of p = BLOCK vectors per step:

* step: R = A Q_block, orthogonalised twice (classical Gram-Schmidt x2) against [u0, Q]; the projection
  coefficients are the entries q_i^T A q_j of the Rayleigh quotient T = Q^T A Q, and the rows of R,
  orthonormalised among themselves, are the next block;
* breakdown: a new vector whose norm falls to rounding level (an invariant subspace: tiny or
  disconnected graphs, small graphs in a padded batch) is set to 0 and stays 0, and T gets a sentinel
  diagonal below the spectrum for such dead columns so that they can never be chosen;
* checkpoint (from block step CHECK_FIRST on, spaced by a cost model): eigh of the small T; where the free
  estimate ||R^T y_last|| of the top Ritz pair passes ``tol``, the Ritz vector v and its **true**
  residual ||A v - mu v|| are formed (one matvec); graphs at or below ``tol`` are finished and frozen
  (their results no longer change). Under the host policy the estimate is read first (one host sync)
  and finished graphs are dropped from the working batch once they are half of it;
* thick restart (Wu & Simon 2000) when the basis is full: keep the ``keep`` largest Ritz vectors plus
  the next block and go on; dead vectors of that block get fresh deterministic directions.

Why blocks: a residual test cannot tell the Fiedler pair from the third one when the start vector
happens to miss the Fiedler direction and mu2 - mu3 is small; with one start vector this happened to
~1% of clustered attention graphs, with two it is far less likely (see the tests). On CPU a block of
two costs about what one vector does (fewer, wider steps).

Nodes outside the valid block (padding) or of (relative) zero degree are excluded: their scale s_i is 0,
so every basis vector is exactly 0 there. Start and fresh vectors are fixed integer hashes of the node
index, identical on every device and for a padded or unpadded copy of the same graph.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from .._checks import valid_mask
from .._types import BLOCK, KEEP, KRYLOV_DIM, FiedlerResult, LanczosParams
from ..kernels.dispatch import sync_policy

__all__ = [
    "BLOCK",
    "KEEP",
    "KRYLOV_DIM",
    "FiedlerResult",
    "LanczosParams",
    "apply_normalized",
    "fix_sign",
    "hash_vector",
    "lanczos_fiedler",
    "node_mask",
    "normalized_scaling",
]

node_mask = valid_mask
"""The padded-size mask (``_checks.valid_mask``) under its older name."""

CHECK_FIRST = 4
"""First convergence checkpoint (block step): attention graphs often converge in 6 to 20 block steps."""

STEP_COST = (2e5, 0.4)
CHECK_COST = (1.5e5, 1.0)
REMAINING_STEPS = 16
"""Cost model (ns per graph, measured on CPU) that spaces checkpoints: a block step costs about
2e5 + 0.4 p N^2, a checkpoint (eigh of the j x j matrix T, the estimate, one host sync) about
1.5e5 + 1.0 j^3. Checking every k steps costs about S C / k for S remaining steps and overshoots
convergence by about k / 2 steps; the total is least at k = sqrt(2 S C / step). So a checkpoint is taken
once the steps since the last one cost sqrt(2 S C step), with S = REMAINING_STEPS (attention graphs
converge in 6 to 30 block steps). Small graphs, whose step is mostly fixed overhead, check every ~4
steps; N = 1024 every ~2. The schedule depends on (N, step) only, never on the batch."""

_SENTINEL = -8.0
"""Diagonal given to dead basis columns in T: far below the spectrum [-1, 1] of A."""


def _bmm(a: Tensor, b: Tensor) -> Tensor:
    """``torch.bmm`` whose per-matrix result does not depend on the batch size.

    CPU BLAS computes a batch of one through a different (gemv-style) kernel than a larger batch, which
    changes rounding; solving a single graph as a batch of two keeps every graph's answer identical
    whatever it is batched with (the recursion relies on that: batched == one image at a time).
    """
    if a.shape[0] == 1 and a.device.type == "cpu":
        return torch.bmm(a.expand(2, -1, -1), b.expand(2, -1, -1))[:1]
    return torch.bmm(a, b)


def _baddbmm(c: Tensor, a: Tensor, b: Tensor, *, alpha: float) -> Tensor:
    """``torch.baddbmm`` with the batch-size-independent rounding of ``_bmm``."""
    if a.shape[0] == 1 and a.device.type == "cpu":
        return torch.baddbmm(c.expand(2, -1, -1), a.expand(2, -1, -1), b.expand(2, -1, -1), alpha=alpha)[:1]
    return torch.baddbmm(c, a, b, alpha=alpha)


def _paired(rows: Tensor) -> Tensor:
    """Batch rows to iterate on: a single CPU row is doubled, so that every step takes the batched BLAS
    kernel directly (same rounding as in any larger batch, see ``_bmm``) instead of paying the copy in
    ``_bmm`` on each of its ~10 products per step. The twin rows compute the same graph."""
    return rows.repeat(2) if rows.numel() == 1 and rows.device.type == "cpu" else rows


def normalized_scaling(W: Tensor, sizes: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Degree scaling of A = diag(s) W diag(s), its top eigenvector u0, and the nodes taking part.

    Args:
        W: (B, N, N) symmetric non-negative graphs, finite everywhere (padding included).
        sizes: (B,) valid block sizes, or None.

    Returns:
        s: (B, N) d^-1/2 on active nodes, exactly 0 elsewhere.
        u0: (B, N) sqrt(d) / ||sqrt(d)|| on active nodes (eigenvalue 1 of A), 0 elsewhere; all 0 when
            no node is active.
        active: (B, N) bool, valid nodes with degree > eps^2 * max degree. Lower degrees (exact zeros,
            underflow) are isolated nodes: they are left out of A, which makes them eigenvalue-0 rows
            that can never carry the Fiedler vector, and they get x = 0.
    """
    b, n, _ = W.shape
    valid = valid_mask(sizes, b, n, W.device)
    zero = W.new_zeros(())
    d = _bmm(valid.to(W.dtype).unsqueeze(1), W).squeeze(1)  # column sums = degrees: fast row bmm
    d = torch.where(valid, d, zero)  # padded rows may hold any finite values (or overflow): drop them
    eps = torch.finfo(W.dtype).eps
    active = valid & (d > eps * eps * d.amax(-1, keepdim=True))
    safe = torch.where(active, d, torch.ones_like(d))
    s = torch.where(active, safe.rsqrt(), zero)
    root = torch.where(active, safe.sqrt(), zero)
    u0 = root / root.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(W.dtype).tiny)
    return s, u0, active


def apply_normalized(W: Tensor, s: Tensor, v: Tensor) -> Tensor:
    """A v = s * (W (s * v)) for (B, N) vectors v; exactly 0 wherever s is 0.

    Computed as the row vector (s * v)^T W, equal for symmetric W: on CPU, bmm of a (B, 1, N) row by
    (B, N, N) streams W row-major and runs ~10x faster than bmm of (B, N, N) by a (B, N, 1) column.
    Padding must be finite and small enough that its column sums do not overflow (0 * inf = NaN);
    ``fiedler`` zeroes padding that is not.
    """
    return s * _bmm((s * v).unsqueeze(1), W).squeeze(1)


@functools.lru_cache(maxsize=256)
def hash_vector(n: int, seed: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(N,) deterministic pseudo-random entries in [-1, 1): an integer hash of (index, seed).

    Integer arithmetic gives the same vector on every device, and entry i does not depend on N, so a
    padded graph starts from the same vector as its unpadded copy. Cached (the recursion asks for the same
    few widths again and again): callers must not modify the result in place.
    """
    mask = 0xFFFFFFFF
    h = (torch.arange(n, dtype=torch.int64, device=device) + 1 + 7919 * seed) * 2654435761 & mask
    h = (h ^ (h >> 15)) * 0x2C1B3C6D & mask
    h = (h ^ (h >> 12)) * 0x297A2D39 & mask
    h = h ^ (h >> 15)
    return (h.to(torch.float64) / 2.0**31 - 1.0).to(dtype)


def fix_sign(x: Tensor) -> Tensor:
    """Flip each row of x (B, N) so that its largest-|.| entry is positive (ties: lowest index)."""
    mag = x.abs()
    top = mag.amax(-1, keepdim=True)
    near = mag >= top * (1 - 16 * torch.finfo(x.dtype).eps)  # rounding-level ties count as ties
    first = near.to(torch.int32).argmax(-1, keepdim=True)  # argmax returns the first maximal index
    return torch.where(x.gather(-1, first) < 0, -x, x)


def _cgs2(V: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Orthogonalise the rows w (b, k, N) against the rows of V (b, r, N) twice (classical Gram-Schmidt,
    "twice is enough"); returns (w (b, k, N), summed coefficients V w^T (b, r, k))."""
    c = _bmm(V, w.transpose(1, 2))
    w = _baddbmm(w, c.transpose(1, 2), V, alpha=-1)
    c2 = _bmm(V, w.transpose(1, 2))
    w = _baddbmm(w, c2.transpose(1, 2), V, alpha=-1)
    return w, c + c2


def _fresh_direction(V: Tensor, active: Tensor, seed: int, tau: float) -> tuple[Tensor, Tensor]:
    """Unit vector on the active nodes orthogonal to the rows of V, or 0 where none is left (b, N)."""
    r = hash_vector(V.shape[-1], seed, V.dtype, V.device) * active
    r = r / r.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(V.dtype).tiny)
    r = _cgs2(V, r.unsqueeze(1))[0].squeeze(1)
    norm = r.norm(dim=-1, keepdim=True)
    ok = norm > tau
    return r * torch.where(ok, norm.reciprocal(), 0.0), ok.squeeze(-1)


def _fill_dead(V: Tensor, alive: Tensor, c0: int, p: int, active: Tensor, seed: int, tau: float,
               read: bool = True) -> None:
    """Give each dead column c0 .. c0+p-1 (row 1 + c of V) a fresh direction orthogonal to the rest,
    in place; a column stays dead (0) where the space of the active nodes is used up. ``read``: skip the
    work when no column is dead (one host read per column); False computes it always, without a read."""
    for a in range(p):
        dead = ~alive[:, c0 + a]
        if not read or bool(dead.any()):
            fresh, ok = _fresh_direction(V[:, : 1 + c0 + p], active, seed + a, tau)  # own row is 0
            V[:, 1 + c0 + a] = torch.where(dead.unsqueeze(-1), fresh, V[:, 1 + c0 + a])
            alive[:, c0 + a] |= dead & ok


def _orthonormalize_into(w: Tensor, out: Tensor, live: Tensor, tau: float) -> None:
    """Orthonormalise the p rows of w (b, p, N) among themselves in order (CGS2 on the earlier ones), into
    ``out`` (b, p, N) and ``live`` (b, p) (views of the basis); rows whose norm falls to ``tau`` (linearly
    dependent, or 0) become 0 with live False."""
    for a in range(w.shape[1]):
        r = w[:, a : a + 1]
        if a:
            r = _cgs2(out[:, :a], r)[0]
        norm = torch.linalg.vector_norm(r, dim=-1, keepdim=True)  # (b, 1, 1)
        ok = norm > tau
        torch.mul(r, norm.reciprocal().masked_fill_(~ok, 0.0), out=out[:, a : a + 1])
        live[:, a] = ok.view(-1)


def _expand(W: Tensor, s: Tensor, V: Tensor, H: Tensor, alive: Tensor, c0: int, p: int, tau: float) -> Tensor:
    """One block Lanczos step in place: the block of columns c0 .. c0+p-1 -> the next block and the rows
    c0 .. c0+p-1 of T's lower triangle in H. Returns the block residual R = A Q_block - [u0, Q]
    coefficients (b, p, N), orthogonal to the basis, which drives the free Ritz residual estimate.

    s is (b, 1, N). Dead (0) columns stay 0: A 0 = 0 and its Gram-Schmidt residual has norm 0 <= tau.
    """
    top = 1 + c0 + p  # rows of V in use: u0 and columns 0 .. c0+p-1
    R = s * _bmm(V[:, 1 + c0 : top] * s, W)  # A q_c for the block, as rows (b, p, N)
    R, coef = _cgs2(V[:, :top], R)
    # Only the lower triangle of T = Q^T A Q is stored and read (eigh's default UPLO="L").
    H[:, c0 : c0 + p, : c0 + p] = coef[:, 1:].transpose(1, 2)
    _orthonormalize_into(R, V[:, top : top + p], alive[:, c0 + p : c0 + 2 * p], tau)
    return R


def _rayleigh_ritz(H: Tensor, alive: Tensor, filled: int) -> tuple[Tensor, Tensor]:
    """Eigenpairs (ascending) of T = Q^T A Q (b, filled, filled), read from the lower triangle kept in H,
    with the sentinel on the diagonal of dead columns so that they can never give the top Ritz value."""
    T = H[:, :filled, :filled].clone()
    diag = T.diagonal(dim1=1, dim2=2)
    diag.masked_fill_(~alive[:, :filled], _SENTINEL)
    return torch.linalg.eigh(T)


def _thick_restart(V: Tensor, H: Tensor, alive: Tensor, theta: Tensor, Y: Tensor, keep: int, p: int,
                   active: Tensor, seed: int, tau: float, read: bool = True) -> None:
    """Restart in place from the top ``keep`` Ritz vectors and the next block (Wu & Simon 2000, block form).

    H restarts as diag(theta_kept); the couplings of the Ritz vectors to the next block are recomputed
    by the next step's Gram-Schmidt. Dead columns of the next block get fresh directions.
    """
    m = Y.shape[-1]
    ritz = _bmm(Y[:, :, m - keep :].transpose(1, 2), V[:, 1 : m + 1])
    kept = theta[:, m - keep :] > _SENTINEL / 2  # sentinel Ritz vectors are (near) 0: drop them
    nxt, nxt_alive = V[:, 1 + m : 1 + m + p].clone(), alive[:, m : m + p].clone()
    V[:, 1:] = 0
    V[:, 1 : keep + 1] = ritz * kept.unsqueeze(-1)
    V[:, 1 + keep : 1 + keep + p] = nxt
    H.zero_()
    H[:, :keep, :keep] = torch.diag_embed(theta[:, m - keep :])
    alive.zero_()
    alive[:, :keep] = kept
    alive[:, keep : keep + p] = nxt_alive
    _fill_dead(V, alive, keep, p, active, seed, tau, read)


@torch.no_grad()
def lanczos_fiedler(W: Tensor, sizes: Tensor | None = None, tol: float | None = None, max_iter: int | None = None,
                    *, params: LanczosParams | None = None, **fields: object) -> FiedlerResult:
    """Fiedler pairs of a batch of graphs by batched thick-restart block Lanczos.

    This is the swappable solver behind ``fiedler(method="lanczos")``; it skips input checks. It runs
    one solve in W's dtype; the float64 rescue of float32 solves is the caller's (``fiedler.py``).

    Args:
        W: (B, N, N) symmetric non-negative graphs in the compute dtype (float32 or float64), finite
            everywhere, padding included (values there are ignored).
        sizes: (B,) int valid block sizes (each >= 2), or None.
        tol, max_iter: override ``params.tol`` / ``params.max_iter`` when given (the common solver
            signature ``(W, sizes, tol, max_iter)``).
        params: ``LanczosParams`` (Krylov dimension, keep, block, budget, tolerance, sync policy);
            ``max_iter`` None here means ``CYCLES`` restart cycles (``params.step_budget(rescued=False)``).
        **fields: further ``LanczosParams`` fields to override (e.g. ``krylov_dim=12, keep=4``).

    Returns:
        FiedlerResult; ``iterations`` counts block steps. Graphs with fewer than two active nodes get
        lam = 0, x = 0, residual 0.

    Convergence is tested at checkpoints (from step CHECK_FIRST on, spaced by the STEP_COST / CHECK_COST
    model, and at the end of each cycle) with the free estimate ||R^T y_last|| (R the block residual) and
    the true residual. The checkpoint schedule depends only on N and the step, and a graph finishes on its
    own estimate and residual, so a batch gives each graph the answer it gets alone (up to bmm rounding):
    finished graphs are frozen, and graphs never mix. Both sync policies finish every graph at the same
    checkpoint; ``"host"`` stops as soon as all are finished, ``"device"`` always runs the whole budget.
    """
    params = (params or LanczosParams()).with_(tol=tol, max_iter=max_iter, **fields)
    n = W.shape[-1]
    m, keep, p = params.basis(n)
    budget = params.step_budget(n, rescued=False)
    if sync_policy(W.device, params.sync) == "device":
        return _lanczos_fixed(W, sizes, params.tol, budget, m, keep, p)
    return _lanczos_early_exit(W, sizes, params.tol, budget, m, keep, p)


def _lanczos_early_exit(W: Tensor, sizes: Tensor | None, tol: float, max_iter: int, m: int, keep: int,
                        p: int) -> FiedlerResult:
    """The host sync policy: checkpoints read whether any graph may finish, finished graphs leave the
    working batch once they are half of it, and the solve returns when every graph has finished."""
    b_all, n, _ = W.shape
    dtype, device = W.dtype, W.device
    tau = 10 * torch.finfo(dtype).eps * math.sqrt(n)  # ||w|| below this (||A|| = ||q|| = 1) is noise

    s, u0, active = normalized_scaling(W, sizes)
    lam = W.new_zeros(b_all)
    x = W.new_zeros(b_all, n)
    residual = W.new_zeros(b_all)
    iterations = torch.zeros(b_all, dtype=torch.int64, device=device)
    converged = torch.ones(b_all, dtype=torch.bool, device=device)
    ids = (active.sum(-1) >= 2).nonzero().squeeze(1)  # fewer than 2 active nodes: nothing to solve
    if ids.numel() == 0:
        return FiedlerResult(lam, x, residual, iterations, converged)
    if b_all == 1 and device.type == "cpu":  # a lone graph runs as a pair (see _paired): no copy of W
        ids = ids.repeat(2)
        W, s, u0, active = W.expand(2, -1, -1), s.expand(2, -1), u0.expand(2, -1), active.expand(2, -1)
    elif ids.numel() < b_all:
        ids = _paired(ids)
        W, s, u0, active = W[ids], s[ids], u0[ids], active[ids]
    b = ids.numel()

    # V rows: u0, then basis columns 0 .. m+p-1 (row c + 1 holds column c); alive[:, c]: column c is real.
    V = W.new_zeros(b, 1 + m + p, n)
    V[:, 0] = u0
    H = W.new_zeros(b, m, m)
    alive = torch.zeros(b, m + p, dtype=torch.bool, device=device)
    _fill_dead(V, alive, 0, p, active, 0, tau)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    c0, steps, cycle = 0, 0, 0
    schedule = _Checkpoints(n, p)
    s_row = s.unsqueeze(1)
    while True:
        while c0 + p <= m and steps < max_iter:
            R = _expand(W, s_row, V, H, alive, c0, p, tau)
            c0, steps = c0 + p, steps + 1
            if not schedule.due(steps, c0, last=c0 + p > m or steps >= max_iter):
                continue
            theta, Y, estimate = _ritz_estimate(H, alive, R, c0, p)
            if not bool((((estimate <= tol) | (steps >= max_iter)) & ~done).any()):
                continue
            mu, v, res = _ritz_pair(W, s, V, theta, Y, c0)
            ok = res <= tol
            finish = _finishing(ok, estimate, tol, steps >= max_iter, done)
            out = ids[finish]
            lam[out] = (1 - mu[finish]).clamp(0, 2)
            x[out] = fix_sign(s[finish] * v[finish])
            residual[out] = res[finish]
            iterations[out] = steps
            converged[out] = ok[finish]
            done = done | finish
            todo = int((~done).sum())
            if todo == 0:
                return FiedlerResult(lam, x, residual, iterations, converged)
            if 2 * todo <= b:  # drop finished graphs once they are half the batch (costs one copy of W)
                rest = _paired((~done).nonzero().squeeze(1))
                W, s, active, ids, done = W[rest], s[rest], active[rest], ids[rest], done[rest]
                s_row = s.unsqueeze(1)
                V, H, alive, theta, Y, b = V[rest], H[rest], alive[rest], theta[rest], Y[rest], rest.numel()
        cycle += 1
        _thick_restart(V, H, alive, theta, Y, keep, p, active, p * cycle, tau)
        c0 = keep


def _lanczos_fixed(W: Tensor, sizes: Tensor | None, tol: float, max_iter: int, m: int, keep: int,
                   p: int) -> FiedlerResult:
    """The device sync policy: ``max_iter`` block steps for every graph, no host read.

    Each checkpoint forms every graph's Ritz pair and true residual; graphs that pass ``tol`` (or reach
    ``max_iter``) are written to the results with masks and frozen there, while the batch keeps its shape.
    Same checkpoints and finishing rule as ``_lanczos_early_exit``, so every graph gets the same answer;
    the cost is the whole budget even when all graphs finished early. (On CUDA, ``torch.linalg.eigh`` of
    the small T still checks its cuSOLVER status on the host inside ATen.)
    """
    b_all, n, _ = W.shape
    dtype, device = W.dtype, W.device
    tau = 10 * torch.finfo(dtype).eps * math.sqrt(n)
    s, u0, active = normalized_scaling(W, sizes)
    solvable = active.sum(-1) >= 2
    if b_all == 1 and device.type == "cpu":  # same rounding as in a batch (see _paired)
        W, s, u0, active, solvable = (t.expand(2, *t.shape[1:]) for t in (W, s, u0, active, solvable))
    b = W.shape[0]
    lam = W.new_zeros(b)
    x = W.new_zeros(b, n)
    residual = W.new_zeros(b)
    iterations = torch.zeros(b, dtype=torch.int64, device=device)
    converged = torch.ones(b, dtype=torch.bool, device=device)
    done = ~solvable  # nothing to solve: the zero answer stands

    V = W.new_zeros(b, 1 + m + p, n)
    V[:, 0] = u0
    H = W.new_zeros(b, m, m)
    alive = torch.zeros(b, m + p, dtype=torch.bool, device=device)
    _fill_dead(V, alive, 0, p, active, 0, tau, read=False)
    c0, steps, cycle = 0, 0, 0
    schedule = _Checkpoints(n, p)
    s_row = s.unsqueeze(1)
    while steps < max_iter:
        while c0 + p <= m and steps < max_iter:
            R = _expand(W, s_row, V, H, alive, c0, p, tau)
            c0, steps = c0 + p, steps + 1
            if not schedule.due(steps, c0, last=c0 + p > m or steps >= max_iter):
                continue
            theta, Y, estimate = _ritz_estimate(H, alive, R, c0, p)
            mu, v, res = _ritz_pair(W, s, V, theta, Y, c0)
            ok = res <= tol
            finish = _finishing(ok, estimate, tol, steps >= max_iter, done)
            lam = torch.where(finish, (1 - mu).clamp(0, 2), lam)
            x = torch.where(finish.unsqueeze(-1), fix_sign(s * v), x)
            residual = torch.where(finish, res, residual)
            iterations = torch.where(finish, steps, iterations)
            converged = torch.where(finish, ok, converged)
            done = done | finish
        if steps >= max_iter:
            break
        cycle += 1
        _thick_restart(V, H, alive, theta, Y, keep, p, active, p * cycle, tau, read=False)
        c0 = keep
    return FiedlerResult(lam[:b_all], x[:b_all], residual[:b_all], iterations[:b_all], converged[:b_all])


class _Checkpoints:
    """When to test convergence: from block step CHECK_FIRST on, once the steps since the last test cost
    what the STEP_COST / CHECK_COST model says, and at the end of every cycle. Depends on (N, step) only,
    never on the batch or the data."""

    def __init__(self, n: int, p: int) -> None:
        self.step_cost = STEP_COST[0] + STEP_COST[1] * p * n * n
        self.since = 0.0

    def due(self, steps: int, c0: int, *, last: bool) -> bool:
        self.since += self.step_cost  # per-graph costs
        check_cost = CHECK_COST[0] + CHECK_COST[1] * c0**3
        if not last and (steps < CHECK_FIRST or self.since**2 < 2 * REMAINING_STEPS * check_cost * self.step_cost):
            return False
        self.since = 0.0
        return True


def _ritz_estimate(H: Tensor, alive: Tensor, R: Tensor, c0: int, p: int) -> tuple[Tensor, Tensor, Tensor]:
    """Ritz values and vectors of T (``_rayleigh_ritz``) and the free residual estimate ||R^T y_last|| (b,)
    of the top pair, y_last being its entries on the last block."""
    theta, Y = _rayleigh_ritz(H, alive, c0)
    y_last = Y[:, c0 - p : c0, -1:].transpose(1, 2)  # (b, 1, p): top Ritz vector, last block
    return theta, Y, _bmm(y_last, R).norm(dim=(1, 2))


def _finishing(ok: Tensor, estimate: Tensor, tol: float, out_of_steps: bool, done: Tensor) -> Tensor:
    """(b,) bool: graphs that finish at this checkpoint, the one rule of both sync policies. A graph
    finishes on its own estimate and true residual (``ok``) only, or when the budget is spent, so a batch
    gives every graph exactly the answer it gets alone (whatever the other graphs do)."""
    return ((ok & (estimate <= tol)) | out_of_steps) & ~done


def _ritz_pair(W: Tensor, s: Tensor, V: Tensor, theta: Tensor, Y: Tensor, c0: int) -> tuple[Tensor, Tensor, Tensor]:
    """Top Ritz pair (mu (b,), unit v (b, N)) of the basis V[:, 1 : c0 + 1] and its true residual (b,)."""
    mu = theta[:, -1]
    v = _bmm(Y[:, :, -1:].transpose(1, 2), V[:, 1 : c0 + 1]).squeeze(1)
    v = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(W.dtype).tiny)
    res = (apply_normalized(W, s, v) - mu.unsqueeze(-1) * v).norm(dim=-1)
    return mu, v, res
