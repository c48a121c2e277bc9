"""Fiedler pairs on CPU by SciPy's ARPACK (implicitly restarted Lanczos), one graph at a time.

Same problem and result as ``lanczos_fiedler``: the top eigenpair (mu, v) of the normalized adjacency
A = D^-1/2 W D^-1/2 on the orthogonal complement of its known top eigenvector u0 = sqrt(d) / ||sqrt(d)||.
Here u0 is deflated by a shift, A' = A - c u0 u0^T, which moves its eigenvalue 1 to 1 - c and leaves every
other eigenpair in place; ``eigsh(k=1, which="LA")`` then finds mu. c = 1 (u0 to 0, inside the bulk of an
attention graph's spectrum) converges faster than the usual c = 2 (u0 to -1, which widens the spectrum
Lanczos has to resolve); where mu <= 0 the answer would be u0 itself, which is detected (|u0 . v| not
at rounding level) and redone with c = 2. A Krylov space of NCV vectors (ARPACK's default is 20)
suits attention graphs, which converge in ~10 products: ARPACK tests convergence only when its space is
full, so a smaller space stops sooner (13 products instead of 21 on BSDS graphs, see docs/benchmarks.md).

Why one graph at a time: on CPU a batch gains nothing (each graph's matrix streams from memory at every
product anyway), and ARPACK's single-vector Lanczos with its own restarts needs fewer products than a
block method, in compiled code. Each graph is solved from the same inputs whatever it is batched with
(its own matrix, 64-byte aligned, a start vector that is a fixed hash of the node index), so a batch gives
every graph bit for bit the answer it gets alone.

Precision: the products run in W's dtype (float32 halves the memory traffic of float64). The true
residual ||A v - mu v|| is evaluated with one more product in W's dtype; where it is not clearly below
``tol`` (above tol / 2, while float32 rounding of one product is ~1e-7), it is evaluated again in float64
(W converted in row blocks that stay in cache), and a float32 solve that misses ``tol`` there is redone
in float64, started from its own vector.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .._types import FiedlerResult
from .lanczos import fix_sign, hash_vector

__all__ = ["DENSE_MAX_N", "NCV", "arpack_fiedler"]

DENSE_MAX_N = 32
"""Graphs with at most this many active nodes are solved by dense float64 ``numpy.linalg.eigh``: ARPACK
needs a Krylov space wider than k + 1, and below this size a dense solve is cheaper anyway."""

NCV = 10
"""ARPACK's Krylov space size (``ncv``): see the module docstring."""

_BLOCK_ELEMENTS = 1 << 18
"""Elements of W converted to float64 at a time for a float64 residual: 2 MB, stays in cache."""

_ALIGN = 64


def _aligned(x: Tensor) -> Tensor:
    """x, contiguous and 64-byte aligned (a copy only when it is not): BLAS kernels may take different,
    differently rounded paths for differently aligned data, and a graph's answer must not depend on
    where its matrix sits in a batch."""
    x = x.contiguous()
    return x if x.data_ptr() % _ALIGN == 0 else x.clone()  # torch's CPU allocator aligns to 64 bytes


class _Graph:
    """One graph's normalized operator: W (n, n) aligned, s = d^-1/2 and unit u0 = sqrt(d) / ||.|| (numpy,
    W's dtype and float64)."""

    def __init__(self, W: Tensor, d: Tensor) -> None:
        self.W = W
        d64 = d.double().numpy()
        self.s64 = 1.0 / np.sqrt(d64)
        root = np.sqrt(d64)
        self.u64 = root / np.linalg.norm(root)
        dtype = W.numpy().dtype
        self.s, self.u0 = self.s64.astype(dtype), self.u64.astype(dtype)
        n = W.shape[0]
        self._inp, self._out = torch.empty(n, dtype=W.dtype), torch.empty(n, dtype=W.dtype)  # reused buffers
        self._inp_np, self._out_np = self._inp.numpy(), self._out.numpy()

    def product(self, x: np.ndarray) -> np.ndarray:
        """A x in W's dtype (a fresh array)."""
        np.multiply(self.s, x, out=self._inp_np)
        torch.mv(self.W, self._inp, out=self._out)
        return self.s * self._out_np

    def residual(self, mu: float, v: np.ndarray, shift: float) -> float:
        """||A' v - mu v||_2 (A' = A - shift u0 u0^T) for unit v float64, the product in W's dtype."""
        x = v.astype(self.s.dtype)
        r = self.product(x).astype(np.float64) - shift * self.u64 * (self.u64 @ v) - mu * v
        return float(np.linalg.norm(r))

    def residual64(self, mu: float, v: np.ndarray, shift: float) -> float:
        """The same in float64 throughout."""
        y = torch.from_numpy(self.s64 * v)
        rows = max(1, _BLOCK_ELEMENTS // self.W.shape[1])
        wy = torch.cat([self.W[i : i + rows].double() @ y for i in range(0, self.W.shape[0], rows)]).numpy()
        r = self.s64 * wy - shift * self.u64 * (self.u64 @ v) - mu * v
        return float(np.linalg.norm(r))

    def as64(self) -> _Graph:
        """The same graph with W in float64 (products in float64)."""
        other = object.__new__(_Graph)
        other.W, other.s64, other.u64, other.s, other.u0 = self.W.double(), self.s64, self.u64, self.s64, self.u64
        n = self.W.shape[0]
        other._inp, other._out = torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64)
        other._inp_np, other._out_np = other._inp.numpy(), other._out.numpy()
        return other


def _eigsh(g: _Graph, shift: float, v0: np.ndarray, tol: float, max_iter: int | None
           ) -> tuple[float, np.ndarray, int]:
    """Top eigenpair of A' = A - shift u0 u0^T in W's dtype; returns (mu, unit v float64, products).
    ARPACK's partial answer is returned when it stops at ``max_iter`` restarts (mu NaN if it has none)."""
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    n = g.W.shape[0]
    count = [0]

    def matvec(x: np.ndarray) -> np.ndarray:
        count[0] += 1
        x = x.reshape(-1).astype(g.s.dtype, copy=False)
        y = g.product(x)
        y -= (shift * (g.u0 @ x)) * g.u0
        return y

    op = LinearOperator((n, n), matvec=matvec, dtype=g.s.dtype)
    try:
        mu, vec = eigsh(op, k=1, which="LA", v0=v0.astype(g.s.dtype), tol=tol, maxiter=max_iter,
                        ncv=min(NCV, n - 1))
    except ArpackNoConvergence as err:
        if len(err.eigenvalues) == 0:
            return float("nan"), np.zeros(n), count[0]
        mu, vec = err.eigenvalues, err.eigenvectors
    v = vec[:, -1].astype(np.float64)
    return float(mu[-1]), v / max(np.linalg.norm(v), np.finfo(np.float64).tiny), count[0]


def _dense(g: _Graph) -> tuple[float, np.ndarray, float]:
    """(mu, v, residual) by dense float64 eigh of A - 2 u0 u0^T (small graphs)."""
    A = g.s64[:, None] * g.W.double().numpy() * g.s64[None, :] - 2.0 * np.outer(g.u64, g.u64)
    theta, Y = np.linalg.eigh(A)
    mu, v = float(theta[-1]), Y[:, -1]
    return mu, v, float(np.linalg.norm(A @ v - mu * v))


def _solve_one(g: _Graph, tol: float, max_iter: int | None) -> tuple[float, np.ndarray, float, int]:
    """(mu, v float64 unit, residual, products) for one graph (all of its nodes active)."""
    n = g.W.shape[0]
    if n <= DENSE_MAX_N:
        return (*_dense(g), 0)
    start = hash_vector(n, 0, torch.float64, torch.device("cpu")).numpy()
    products = 0
    for shift in (1.0, 2.0):
        mu, v, used = _eigsh(g, shift, start, tol, max_iter)
        products += used
        if mu == mu and abs(float(g.u64 @ v)) <= 1e-3:  # else: u0 came out on top (mu <= 0)
            break
    if mu != mu:
        return mu, v, float("inf"), products
    res = g.residual(mu, v, shift) if g.W.dtype != torch.float64 else g.residual64(mu, v, shift)
    products += 1
    if res > tol / 2 and g.W.dtype != torch.float64:  # not clearly converged: judge in float64
        res = g.residual64(mu, v, shift)
        if res > tol:  # float32 rounding in the way: finish in float64 from this vector
            g64 = g.as64()
            mu, v, more = _eigsh(g64, shift, v, tol, max_iter)
            products += more + 1
            res = g64.residual64(mu, v, shift) if mu == mu else float("inf")
    return mu, v, res, products


@torch.no_grad()
def arpack_fiedler(W: Tensor, sizes: Tensor | None = None, tol: float = 1e-5,
                   max_iter: int | None = None) -> FiedlerResult:
    """Fiedler pairs of a batch of CPU graphs by ARPACK ``eigsh``, one graph at a time (skips input checks).

    Args:
        W: (B, N, N) CPU, symmetric non-negative graphs in the compute dtype (float32 or float64), finite
            everywhere (padding included).
        sizes: (B,) valid block sizes, or None.
        tol: residual target ||A v - mu v||; also ARPACK's relative tolerance.
        max_iter: most ARPACK restarts (None: ARPACK's default, 10 N).

    Returns:
        FiedlerResult as ``lanczos_fiedler``: lam = 1 - mu, x = D^-1/2 v with its sign fixed (0 at padding
        and at isolated nodes: degree <= eps^2 * the largest), ``iterations`` = products with W (0 for the
        dense eigh of graphs with at most DENSE_MAX_N active nodes and for degenerate graphs). Graphs with
        fewer than two active nodes get lam = 0, x = 0, residual 0. A graph's answer does not depend on
        its batch.
    """
    if W.device.type != "cpu":
        raise ValueError(f"W: the ARPACK solver runs on CPU tensors, got device {W.device}")
    b_all, n, _ = W.shape
    dtype = W.dtype
    lam = W.new_zeros(b_all)
    x = W.new_zeros(b_all, n)
    residual = W.new_zeros(b_all)
    iterations = torch.zeros(b_all, dtype=torch.int64)
    converged = torch.ones(b_all, dtype=torch.bool)
    eps = torch.finfo(dtype).eps
    for b in range(b_all):
        size = n if sizes is None else int(sizes[b])
        Wb = W[b, :size, :size] if size < n else W[b]
        d = Wb.sum(-1)  # W is symmetric: row sums are the degrees
        keep = d > eps * eps * d.max() if size else d > 0
        idx = keep.nonzero().squeeze(1)
        if idx.numel() < 2:
            continue
        if idx.numel() == n:
            g = _Graph(_aligned(Wb), d)
        else:  # padding or isolated nodes: solve on the active block (a fresh, aligned copy)
            sub = Wb.index_select(0, idx).index_select(1, idx)
            g = _Graph(sub, sub.sum(-1))
        mu, v, res, products = _solve_one(g, tol, max_iter)
        full = torch.zeros(1, n, dtype=torch.float64)
        full[0, idx] = torch.from_numpy(v * g.s64)
        lam[b] = min(max(1.0 - mu, 0.0), 2.0) if mu == mu else float("nan")
        x[b] = fix_sign(full)[0].to(dtype)
        residual[b] = res
        iterations[b] = products
        converged[b] = res <= tol
    return FiedlerResult(lam, x, residual, iterations, converged)
