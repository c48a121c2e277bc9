"""Fiedler pairs (eigh and batched Lanczos) against a float64 dense eigen-solve written here.

Eigenpairs are checked by eigenvalue and float64 residual; eigenvectors are compared (|<v, v_ref>| ~ 1)
only where the Fiedler eigenvalue is well separated, never element by element for degenerate spectra.
"""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu._types import LanczosParams
from diffcut_gpu.spectral.fiedler import FiedlerResult, fiedler
from diffcut_gpu.spectral.lanczos import hash_vector
from tests.conftest import attention_like, planted_attention

METHODS = ["eigh", "lanczos"]
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}
# Allowed |lam - lam_ref| and float64 residual of the returned pair, per compute dtype.
ATOL = {torch.float32: 2e-5, torch.float64: 1e-9}


# ----------------------------------------------------------------------------- reference and inputs
def _reference(W: torch.Tensor) -> tuple[float, torch.Tensor, float]:
    """float64 dense reference for one graph (n, n): (lam, v_ref on all nodes, gap mu2 - mu3)."""
    W = W.double()
    d = W.sum(-1)
    keep = d > 0
    sk = d[keep].rsqrt()
    A = sk[:, None] * W[keep][:, keep] * sk[None, :]
    vals, vecs = torch.linalg.eigh(A)
    v = torch.zeros(W.shape[0], dtype=torch.float64)
    if keep.sum() >= 2:
        v[keep] = vecs[:, -2]
    gap = float(vals[-2] - vals[-3]) if keep.sum() >= 3 else float("inf")
    lam = 1 - float(vals[-2]) if keep.sum() >= 2 else 0.0
    return lam, v, gap


def _check_pair(W: torch.Tensor, lam: torch.Tensor, x: torch.Tensor, atol: float, *,
                vector: bool = True) -> None:
    """Check one returned pair (lam, x) of graph W (n, n) in float64: eigenvalue, residual, u0-orthogonality,
    norm, sign convention, and (when the eigenvalue is well separated and ``vector``) the direction."""
    W, x = W.double(), x.double()
    assert torch.isfinite(x).all() and torch.isfinite(lam)
    lam_ref, v_ref, gap = _reference(W)
    assert abs(float(lam) - lam_ref) <= atol
    d = W.sum(-1)
    v = d.sqrt() * x
    assert float(v.norm()) == pytest.approx(1.0, abs=1e-4 if atol > 1e-6 else 1e-9)
    A = W * torch.outer(d, d).clamp_min(1e-300).rsqrt() * (torch.outer(d, d) > 0)
    assert float((A @ v - (1 - float(lam)) * v).norm()) <= atol
    assert abs(float(d.sqrt() @ v)) <= atol * float(d.sum().sqrt())  # orthogonal to u0 = sqrt(d) / ||.||
    assert float(x.max()) >= float(x.abs().max()) * (1 - 1e-5)  # sign: the largest |x| entry is positive
    if vector and gap > 1e-2:
        cos = abs(float(v @ v_ref)) / float(v.norm())
        assert cos == pytest.approx(1.0, abs=max(10 * atol / gap, 1e-8))


def _pi(P: torch.Tensor) -> torch.Tensor:
    """Stationary distribution (B, N) of row-stochastic P by lazy power iteration in float64."""
    P = P.double()
    pi = torch.full(P.shape[:2], 1.0 / P.shape[-1], dtype=torch.float64)
    for _ in range(5000):
        nxt = 0.5 * (pi + torch.bmm(pi.unsqueeze(1), P).squeeze(1))
        if float((nxt - pi).abs().max()) < 1e-15:
            break
        pi = nxt
    return nxt / nxt.sum(-1, keepdim=True)


def _reversible(P: torch.Tensor) -> torch.Tensor:
    """W = (diag(pi) P + P^T diag(pi)) / 2, float64."""
    P = P.double()
    Pi_P = _pi(P).unsqueeze(-1) * P
    return (Pi_P + Pi_P.transpose(-1, -2)) / 2


def _random_graph(b: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    W = torch.rand(b, n, n, generator=g, dtype=torch.float64) ** 4
    return W + W.transpose(-1, -2)


def _planted(b: int, sizes: list[int], seed: int, outside: float = 0.02) -> torch.Tensor:
    P, _ = planted_attention(b, sizes, outside=outside, noise=0.3, seed=seed)
    return _reversible(P)


GRAPHS = {
    "random": lambda b, n, seed: _random_graph(b, n, seed),
    "attention": lambda b, n, seed: _reversible(attention_like(b, n, seed=seed)),
    "planted": lambda b, n, seed: _planted(b, [n // 3, n - n // 3], seed),
}


# ----------------------------------------------------------------------------- behaviour
@pytest.mark.parametrize("method", ["auto", *METHODS])
def test_smoke(method, device):
    W = _random_graph(3, 70, 0).float().to(device)
    lam, x = fiedler(W, method=method)
    assert lam.shape == (3,) and x.shape == (3, 70)
    assert lam.dtype == x.dtype == torch.float32 and lam.device == W.device
    info = fiedler(W, method=method, return_info=True)
    assert isinstance(info, FiedlerResult)
    assert info.iterations.dtype == torch.int64 and info.converged.dtype == torch.bool
    assert info.converged.all() and (info.residual <= 1e-5).all()
    assert (info.iterations > 0).all() == (method == "lanczos")


@pytest.mark.parametrize("kind", list(GRAPHS))
@pytest.mark.parametrize("n", [3, 7, 33, 130])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_ref(kind, n, method, dtype):
    W = GRAPHS[kind](2, n, 10 * n + 1).to(dtype)
    info = fiedler(W, method=method, tol=TOL[dtype], return_info=True)
    assert info.converged.all()
    for b in range(2):
        _check_pair(W[b], info.lam[b], info.x[b], ATOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_start_vector_missing_fiedler_direction(dtype):
    """The first start vector is exactly orthogonal to the Fiedler vector and mu2 - mu3 = 0.01: one-vector
    Lanczos then converges to the third eigenpair with a tiny residual (lam = 0.76); the default block of
    two start vectors finds lam = 0.75. W = 11^T / n + sum mu_i v_i v_i^T on Hadamard-like directions."""
    n = 64
    H = torch.ones(1, 1, dtype=torch.float64)
    while H.shape[0] < n:
        H = torch.cat([torch.cat([H, H], 1), torch.cat([H, -H], 1)])
    H = H / n**0.5  # orthonormal rows, row 0 is u0
    h = hash_vector(n, 0, torch.float64, torch.device("cpu"))
    h = h - h.mean()  # the deflated first start vector
    v2 = (h @ H[2]) * H[1] - (h @ H[1]) * H[2]
    v2 = v2 / v2.norm()
    W = torch.full((n, n), 1.0 / n, dtype=torch.float64) + 0.25 * torch.outer(v2, v2)
    W = W + 0.24 * torch.outer(H[3], H[3])
    for i in range(4):
        W = W + 0.03 * (-1) ** i * torch.outer(H[4 + i], H[4 + i])
    assert (W >= 0).all()
    info = fiedler(W[None].to(dtype), method="lanczos", tol=TOL[dtype], return_info=True)
    assert info.lam.item() == pytest.approx(0.75, abs=ATOL[dtype])
    _check_pair(W, info.lam[0], info.x[0], ATOL[dtype])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_near_degenerate(method, dtype):
    """Four equal planted blocks: mu2 ~ mu3 ~ mu4; only the eigenvalue and residual are defined."""
    W = _planted(2, [30, 30, 30, 30], 5, outside=0.05).to(dtype)
    _, _, gap = _reference(W[0])
    assert gap < 1e-2  # the case is really near-degenerate
    info = fiedler(W, method=method, tol=TOL[dtype], return_info=True)
    assert info.converged.all()
    for b in range(2):
        _check_pair(W[b], info.lam[b], info.x[b], ATOL[dtype], vector=False)


@pytest.mark.parametrize("method", METHODS)
def test_disconnected(method):
    """Three components: lam = 0 and x is some null vector orthogonal to u0."""
    W = _planted(1, [20, 25, 30], 6, outside=0.0)
    info = fiedler(W, method=method, tol=1e-10, return_info=True)
    assert info.lam.abs().item() <= 1e-9 and info.converged.all()
    _check_pair(W[0], info.lam[0], info.x[0], 1e-9, vector=False)


@pytest.mark.parametrize("method", METHODS)
def test_isolated_nodes(method):
    """Zero-degree nodes get x = 0 and do not change the Fiedler pair of the rest."""
    W = _random_graph(1, 40, 7)
    iso = torch.tensor([0, 13, 39])
    W[:, iso, :] = 0
    W[:, :, iso] = 0
    lam, x = fiedler(W, method=method, tol=1e-10)
    assert torch.isfinite(x).all() and (x[0, iso] == 0).all()
    rest = torch.ones(40, dtype=torch.bool)
    rest[iso] = False
    lam_rest, _ = fiedler(W[:, rest][:, :, rest], method="eigh")
    assert lam.item() == pytest.approx(lam_rest.item(), abs=1e-9)
    _check_pair(W[0], lam[0], x[0], 1e-9)


@pytest.mark.parametrize("method", METHODS)
def test_edgeless_graphs(method):
    """No edges, or a single node with a self-loop: lam = 0, x = 0, no NaN."""
    W = torch.zeros(2, 5, 5, dtype=torch.float64)
    W[1, 2, 2] = 1.0
    info = fiedler(W, method=method, return_info=True)
    assert torch.equal(info.lam, torch.zeros(2, dtype=torch.float64))
    assert torch.equal(info.x, torch.zeros(2, 5, dtype=torch.float64))
    assert info.converged.all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_two_nodes(method, dtype):
    """N = 2 is solved exactly: with self-loops a, c and edge e, mu = (ac - e^2) / ((a + e)(c + e))."""
    a, c, e = 0.3, 0.9, 0.5
    W = torch.tensor([[[a, e], [e, c]], [[0.0, 2.0], [2.0, 0.0]]], dtype=dtype)
    info = fiedler(W, method=method, return_info=True)
    mu = (a * c - e * e) / ((a + e) * (c + e))
    assert info.lam.tolist() == pytest.approx([1 - mu, 2.0], abs=10 * torch.finfo(dtype).eps)
    assert info.converged.all() and info.x[1, 0] > 0  # exact tie |x_0| = |x_1|: lowest index positive
    for b in range(2):
        _check_pair(W[b], info.lam[b], info.x[b], ATOL[dtype])


@pytest.mark.parametrize("garbage", ["positive", "mixed"])
@pytest.mark.parametrize("method", METHODS)
def test_padded_equals_unpadded(method, garbage):
    """Mixed sizes in one padded batch, padding full of garbage (huge; or huge, negative and NaN)."""
    sizes = [5, 2, 61, 37]
    graphs = [GRAPHS["attention"](1, n, n)[0] for n in sizes]
    n = max(sizes)
    g = torch.Generator().manual_seed(0)
    if garbage == "positive":
        W = 1e30 * torch.rand(len(sizes), n, n, generator=g, dtype=torch.float64)
    else:
        W = 1e30 * torch.randn(len(sizes), n, n, generator=g, dtype=torch.float64)
        W[0, -1, -1] = float("nan")
    for b, (size, Wb) in enumerate(zip(sizes, graphs)):
        W[b, :size, :size] = Wb
    lam, x = fiedler(W, method=method, tol=1e-10, sizes=torch.tensor(sizes))
    for b, (size, Wb) in enumerate(zip(sizes, graphs)):
        lam_b, x_b = fiedler(Wb[None], method=method, tol=1e-10)
        assert lam[b].item() == pytest.approx(lam_b.item(), abs=1e-9)
        assert torch.allclose(x[b, :size], x_b[0], atol=1e-7)  # well separated: same vector, same sign
        assert (x[b, size:] == 0).all()


@pytest.mark.parametrize("storage", [torch.float16, torch.bfloat16])
def test_half_storage(storage):
    """fp16/bf16 graphs are upcast: float32 results for the stored (rounded) matrix."""
    W = GRAPHS["attention"](2, 90, 14)
    W = (W / W.amax()).to(storage)
    for method in METHODS:
        lam, x = fiedler(W, method=method)
        assert lam.dtype == x.dtype == torch.float32
        for b in range(2):
            _check_pair(W[b].double(), lam[b], x[b], ATOL[torch.float32])


def test_scale_invariant_and_deterministic():
    W = GRAPHS["random"](2, 120, 15)
    lam, x = fiedler(W, method="lanczos", tol=1e-10)
    lam2, x2 = fiedler(W, method="lanczos", tol=1e-10)
    assert torch.equal(lam, lam2) and torch.equal(x, x2)
    lam3, x3 = fiedler(1e-6 * W, method="lanczos", tol=1e-10)
    assert torch.allclose(lam3, lam, atol=1e-9) and torch.allclose(1e-3 * x3, x, atol=1e-7)


def test_max_iter_not_converged():
    W = _planted(1, [30, 30, 30, 30], 16, outside=0.05)
    info = fiedler(W, method="lanczos", tol=1e-12, max_iter=3, return_info=True)
    assert not info.converged.any() and info.iterations.item() == 3
    assert info.residual.item() > 1e-12 and torch.isfinite(info.x).all()
    with pytest.warns(RuntimeWarning, match="did not reach tol"):
        fiedler(W, method="lanczos", tol=1e-12, max_iter=3)


def test_auto_switches_to_lanczos():
    small = fiedler(_random_graph(1, 20, 17), return_info=True)
    large = fiedler(_random_graph(1, 400, 18), return_info=True)
    assert small.iterations.item() == 0 and large.iterations.item() > 0


def test_empty_batch():
    lam, x = fiedler(torch.zeros(0, 6, 6))
    assert lam.shape == (0,) and x.shape == (0, 6)


# ----------------------------------------------------------------------------- exceptions
@pytest.mark.parametrize(
    "W, kwargs, match",
    [
        (torch.rand(4, 4), {}, r"W: expected shape \(B, N, N\)"),
        (torch.rand(2, 4, 5), {}, "W: expected square"),
        (torch.rand(2, 1, 1), {}, "at least 2 nodes"),
        (torch.ones(2, 4, 4, dtype=torch.int64), {}, "W: expected a floating-point"),
        (torch.full((1, 3, 3), float("nan")), {}, "W: expected finite"),
        (-torch.ones(1, 3, 3), {}, "W: expected non-negative"),
        (attention_like(1, 6), {}, "W: expected a symmetric graph"),
        (torch.full((1, 3, 3), 1e38), {}, "W: expected entries <="),
        (torch.ones(2, 4, 4), {"method": "lobpcg"}, "method: expected one of"),
        (torch.ones(2, 4, 4), {"tol": 0.0}, "tol: expected a positive"),
        (torch.ones(2, 4, 4), {"max_iter": 0}, "max_iter: expected an integer"),
        (torch.ones(2, 4, 4), {"sizes": torch.tensor([4])}, r"sizes: expected shape \(2,\)"),
        (torch.ones(2, 4, 4), {"sizes": torch.tensor([4, 1])}, r"sizes: expected values in \[2, 4\]"),
        (torch.ones(2, 4, 4), {"sizes": torch.tensor([4, 5])}, r"sizes: expected values in \[2, 4\]"),
        (torch.ones(2, 4, 4), {"sizes": torch.tensor([4.0, 3.0])}, "sizes: expected an integer"),
    ],
)
def test_exception(W, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fiedler(W, **kwargs)


def test_batch_invariant_exactly_on_clustered_spectra():
    """A graph's answer does not depend on the graphs batched with it (the recursion relies on it)."""
    from diffcut_gpu import reversibilize as _reversibilize
    from tests.conftest import attention_like as _attention_like

    W = _reversibilize(_attention_like(6, 300, seed=5, temperature=0.5)).float()  # near-uniform: clustered
    batch = fiedler(W, method="lanczos", return_info=True)
    for b in range(6):
        one = fiedler(W[b : b + 1], method="lanczos", return_info=True)
        assert torch.equal(one.x[0], batch.x[b]) and torch.equal(one.iterations[0], batch.iterations[b])


@pytest.mark.parametrize("sync", ["host", "device"])
def test_float32_stall_is_rescued_in_float64(monkeypatch, sync):
    """Graphs a float32 solve leaves above tol are re-solved in float64 and meet tol (checked residual),
    under both sync policies (the device one finds the stuck graphs without a host read)."""
    import diffcut_gpu._types as types_module
    from diffcut_gpu import reversibilize as _reversibilize
    from tests.conftest import attention_like as _attention_like

    monkeypatch.setattr(types_module, "FLOAT32_CYCLES", 0.05)  # about one block step in float32
    monkeypatch.setattr(types_module, "CYCLES", 4)  # the float64 budget (all of it runs under "device")
    W = _reversibilize(_attention_like(3, 260, seed=9, temperature=2.0)).float()
    info = fiedler(W, method="lanczos", tol=1e-7, return_info=True, params=LanczosParams(sync=sync))
    assert info.converged.all() and (info.residual <= 1e-7).all()
    assert (info.iterations > 1).all() and info.x.dtype == torch.float32
    ref = fiedler(W.double(), method="eigh", return_info=True)
    assert torch.allclose(info.lam.double(), ref.lam, atol=1e-6)
