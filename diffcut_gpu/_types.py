"""Result types, solver settings and constants shared by the torch core and the CUDA kernels.

A leaf module (it imports only torch), so that ``spectral/`` and ``kernels/`` can both import it
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import NamedTuple

from torch import Tensor

KRYLOV_DIM = 48
"""Basis size m per cycle (capped near N - 1): Gram-Schmidt on 48 columns costs far less than a matvec."""

KEEP = 16
"""Ritz vectors kept at a thick restart (rounded down to a multiple of the block, at most m - block)."""

BLOCK = 2
"""Vectors per block step: two independent start directions guard against a start vector that misses
the Fiedler direction (misconvergence in clustered spectra); see ``lanczos_fiedler``."""

FLOAT32_CYCLES = 4
"""Restart cycles a float32 Lanczos solve gets (when ``max_iter`` is not given) before the graphs that
have not reached ``tol`` are solved again in float64. Well-separated graphs converge in one cycle;
clustered spectra of large sub-graphs can stall at a float32 rounding floor of a few 1e-5."""

CYCLES = 40
"""Restart cycles of a solve without a float64 rescue behind it, when ``max_iter`` is not given."""

SYNC_POLICIES = ("auto", "host", "device")
"""How a solver may decide when to stop: ``"host"`` reads convergence flags on the host at checkpoints
and stops early (cheap on CPU, where a read costs nothing); ``"device"`` runs a fixed number of steps
with per-graph masks and never reads a device value (on a GPU every read drains the stream);
``"auto"`` lets the dispatch choose per device (``kernels.dispatch.sync_policy``)."""


class FiedlerResult(NamedTuple):
    """Fiedler pair of a batch of graphs, with solver diagnostics.

    Attributes:
        lam: (B,) second-smallest eigenvalue of the normalized Laplacian, 1 - mu, in [0, 2].
        x: (B, N) D^-1/2 v with ||v|| = 1, sign fixed (largest |x| entry positive), 0 at padding and at
            isolated nodes.
        residual: (B,) ||A v - mu v||_2; A has spectral norm 1, so this is relative to the matrix.
        iterations: (B,) int64, Lanczos block steps used, i.e. passes over W (0 for ``eigh`` and for
            degenerate graphs).
        converged: (B,) bool, residual <= tol.
    """

    lam: Tensor
    x: Tensor
    residual: Tensor
    iterations: Tensor
    converged: Tensor


@dataclass(frozen=True, kw_only=True)
class LanczosParams:
    """Settings of a Lanczos Fiedler solve, in one place for the torch reference and the CUDA kernel.

    Attributes:
        krylov_dim: basis size m per restart cycle (capped near N - 1, rounded up to a multiple of
            ``block``).
        keep: Ritz vectors kept at each thick restart (a multiple of ``block``, at most m - block).
        block: vectors per step (the CUDA kernel runs block 1).
        max_iter: most block steps (passes over W) per graph in one solve, over all restart cycles.
            None: ``FLOAT32_CYCLES`` cycles for a float32 solve with a float64 rescue behind it, else
            ``CYCLES`` cycles (see ``step_budget``). The float64 rescue is a second solve with the same
            budget; ``FiedlerResult.iterations`` adds the steps of both.
        tol: a graph stops once its true residual ||A v - mu v|| <= tol.
        float64_rescue: re-solve in float64 the float32 graphs left above ``tol``.
        sync: ``"auto"``, ``"host"`` or ``"device"`` (see ``SYNC_POLICIES``).
    """

    krylov_dim: int = KRYLOV_DIM
    keep: int = KEEP
    block: int = BLOCK
    max_iter: int | None = None
    tol: float = 1e-5
    float64_rescue: bool = True
    sync: str = "auto"

    def __post_init__(self) -> None:
        for name in ("krylov_dim", "block"):
            _check_int(name, getattr(self, name), 1)
        _check_int("keep", self.keep, 0)
        if self.max_iter is not None:
            _check_int("max_iter", self.max_iter, 1)
        tol = self.tol
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 < tol < float("inf"):
            raise ValueError(f"tol: expected a positive finite float, got {tol!r}")
        if self.sync not in SYNC_POLICIES:
            raise ValueError(f"sync: expected one of {', '.join(SYNC_POLICIES)}, got {self.sync!r}")

    def with_(self, **changes: object) -> LanczosParams:
        """A copy with the given fields changed; None values leave a field as it is."""
        names = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise TypeError(
                f"LanczosParams: unknown field(s) {', '.join(unknown)}; expected {', '.join(sorted(names))}"
            )
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def basis(self, n: int) -> tuple[int, int, int]:
        """(m, keep, p) for graphs of (padded) size n: the basis size, Ritz vectors kept, block size."""
        p = max(1, self.block)
        m = p * max(1, -(-min(self.krylov_dim, n - 1) // p))
        return m, p * max(0, min(self.keep, m - p) // p), p

    def step_budget(self, n: int, *, rescued: bool) -> int:
        """Block steps one solve may take: ``max_iter``, or a number of restart cycles of the basis for
        size-n graphs (``FLOAT32_CYCLES`` when a float64 rescue follows, ``CYCLES`` otherwise)."""
        if self.max_iter is not None:
            return self.max_iter
        if rescued:  # cycles of a full-size basis, whatever n
            return max(1, int(FLOAT32_CYCLES * (self.krylov_dim // max(1, self.block))))
        m, _, p = self.basis(n)
        return CYCLES * (m // p)


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
