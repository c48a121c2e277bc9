"""Input validation, done up front before any heavy work.

Every message names the argument and says "expected X, got Y", so that a user can fix the call
without reading a traceback. Checks that need a value from the device (NaN, negative entries) cost
one small reduction and one host sync; they run once per public call, never inside solver loops.
"""

from __future__ import annotations

import torch
from torch import Tensor


def valid_mask(sizes: Tensor | None, batch: int, n: int, device: torch.device) -> Tensor:
    """(B, N) bool: True inside the valid block ``[:sizes[b]]`` of each padded graph (all True for None).

    The one padded-size mask of the package; no host sync (sizes stays on the device).
    """
    if sizes is None:
        return torch.ones(batch, n, dtype=torch.bool, device=device)
    return torch.arange(n, device=device).unsqueeze(0) < sizes.to(device).unsqueeze(1)


def check_tensor(name: str, x: object) -> Tensor:
    """Raise unless ``x`` is a ``torch.Tensor``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def check_floating(name: str, x: Tensor) -> None:
    """Raise unless ``x`` has a floating dtype."""
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {x.dtype}")


def check_batched_square(name: str, x: Tensor, *, min_nodes: int = 2) -> None:
    """Raise unless ``x`` is a batch of square matrices (B, N, N) with N >= ``min_nodes``."""
    check_tensor(name, x)
    if x.ndim != 3:
        raise ValueError(f"{name}: expected shape (B, N, N), got {tuple(x.shape)}")
    if x.shape[-1] != x.shape[-2]:
        raise ValueError(f"{name}: expected square matrices (B, N, N), got {tuple(x.shape)}")
    if x.shape[-1] < min_nodes:
        raise ValueError(
            f"{name}: expected at least {min_nodes} nodes per graph, got N={x.shape[-1]}; "
            "a graph with fewer nodes has nothing to cut"
        )
    check_floating(name, x)


def check_finite(name: str, x: Tensor) -> None:
    """Raise if ``x`` holds NaN or Inf."""
    if x.numel() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: expected finite values, got NaN or Inf entries")


def check_nonnegative(name: str, x: Tensor) -> None:
    """Raise if ``x`` has negative entries."""
    if x.numel() and bool((x < 0).any()):
        raise ValueError(
            f"{name}: expected non-negative entries (a graph or transition matrix), "
            f"got minimum {float(x.min()):.3g}"
        )


def check_row_stochastic(name: str, P: Tensor, *, atol: float | None = None) -> None:
    """Raise unless every row of ``P`` (B, N, N) sums to 1 within ``atol``."""
    if P.numel() == 0:
        return
    if atol is None:  # rounding each entry of a 16-bit P moves a row sum by up to eps / 2
        atol = torch.finfo(P.dtype).eps if P.dtype in (torch.float16, torch.bfloat16) else 1e-4
    err = (P.float().sum(-1) - 1).abs().max()
    if float(err) > atol:
        raise ValueError(
            f"{name}: expected rows summing to 1 (a row-stochastic transition matrix), got a row sum "
            f"off by {float(err):.3g}; normalise rows first (P / P.sum(-1, keepdim=True)) or pass a "
            "graph to recursive_ncut instead"
        )


def check_graph_values(name: str, W: Tensor, sizes: Tensor | None = None) -> Tensor:
    """Raise on NaN/Inf/negative/huge entries in the valid blocks of ``W`` (B, N, N), or on an
    asymmetric graph; three passes over W (one ``aminmax``, two row-vector products).

    Returns W, with its padding zeroed when (and only when) it holds NaN, Inf, negative or huge values
    (whose sums could overflow in a matvec); the valid block is left as it is. Symmetry is checked
    cheaply: row sums must equal column sums within sqrt(eps) of the largest degree, which catches the
    usual mistake of passing a row-stochastic attention matrix P instead of a graph.
    """
    if W.numel() == 0:
        return W
    b, n, _ = W.shape
    lo, hi = torch.aminmax(W)
    big = torch.finfo(W.dtype).max / (4 * n)  # beyond this, sums of padding could overflow
    valid = valid_mask(sizes, b, n, W.device)
    if not bool((lo >= 0) & (hi <= big)):  # NaN fails both comparisons
        block = valid.unsqueeze(-1) & valid.unsqueeze(-2)
        if bool((~torch.isfinite(W) & block).any()):
            raise ValueError(f"{name}: expected finite values in the valid block, got NaN or Inf entries")
        if bool(((W < 0) & block).any()):
            low = float(torch.where(block, W, torch.zeros_like(W)).min())
            raise ValueError(f"{name}: expected non-negative entries (a graph), got minimum {low:.3g}")
        if bool(((W > big) & block).any()):
            raise ValueError(
                f"{name}: expected entries <= {big:.3g} so that degrees cannot overflow, got {float(hi):.3g}; "
                "rescale W (the NCut and the Fiedler pair do not depend on scale)"
            )
        W = torch.where(block, W, torch.zeros_like(W))  # the padding was bad: make it harmless
    vf = valid.to(W.dtype)
    rows = torch.bmm(vf.unsqueeze(1), W.transpose(1, 2)).squeeze(1)  # row-vector bmm: fast on CPU
    cols = torch.bmm(vf.unsqueeze(1), W).squeeze(1)
    zero = W.new_zeros(())
    gap = torch.where(valid, (rows - cols).abs(), zero).amax(-1)
    scale = torch.where(valid, rows, zero).amax(-1).clamp_min(torch.finfo(W.dtype).tiny)
    err = float((gap / scale).max())
    if err > torch.finfo(W.dtype).eps ** 0.5:
        raise ValueError(
            f"{name}: expected a symmetric graph (row sums equal to column sums), got a mismatch of {err:.3g} "
            "of the largest degree; build one with reversibilize(P) or symmetrize(P)"
        )
    return W


def check_graph(name: str, W: Tensor, *, min_nodes: int = 2) -> Tensor:
    """Full check of a graph batch: shape, dtype, finite, non-negative, symmetric. Returns W."""
    check_batched_square(name, W, min_nodes=min_nodes)
    return check_graph_values(name, W if W.dtype in (torch.float32, torch.float64) else W.float())


def check_transition(name: str, P: Tensor, *, min_nodes: int = 2) -> None:
    """Full check of a transition-matrix batch: shape, dtype, finite, non-negative, rows sum to 1."""
    check_batched_square(name, P, min_nodes=min_nodes)
    check_finite(name, P)
    check_nonnegative(name, P)
    check_row_stochastic(name, P)


def check_sizes(sizes: Tensor | None, batch: int, n: int, *, min_size: int = 1) -> None:
    """Raise unless ``sizes`` is None or a (B,) integer tensor with ``min_size <= sizes <= n``."""
    if sizes is None:
        return
    check_tensor("sizes", sizes)
    if sizes.ndim != 1 or sizes.shape[0] != batch:
        raise ValueError(f"sizes: expected shape ({batch},), got {tuple(sizes.shape)}")
    if sizes.is_floating_point() or sizes.dtype == torch.bool:
        raise ValueError(f"sizes: expected an integer tensor, got dtype {sizes.dtype}")
    if sizes.numel() and (bool((sizes < min_size).any()) or bool((sizes > n).any())):
        raise ValueError(
            f"sizes: expected values in [{min_size}, {n}], got min {int(sizes.min())}, max {int(sizes.max())}"
        )


def check_grid(grid: tuple[int, int], n: int) -> tuple[int, int]:
    """Raise unless ``grid`` = (h, w) are positive ints with h * w == n."""
    if not (isinstance(grid, (tuple, list)) and len(grid) == 2 and all(int(g) == g and g > 0 for g in grid)):
        raise ValueError(f"grid: expected (h, w) positive ints, got {grid!r}")
    h, w = int(grid[0]), int(grid[1])
    if h * w != n:
        raise ValueError(f"grid: expected h * w == N = {n} tokens, got {h} x {w} = {h * w}")
    return h, w


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def check_int(name: str, value: object, low: int) -> int:
    """Raise unless ``value`` is an int (not bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value
