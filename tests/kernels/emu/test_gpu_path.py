"""The whole GPU path of a segmentation, every kernel on the CPU emulator, against the torch backend.

Real inputs: DINOv2-S attention of BSDS500 val photos at 224 x 224 px (256 tokens), computed here.
The "cuda" run goes P -> power walk (renorm_rows kernel) -> reversibilize -> ``recursive_ncut`` with
method="lanczos", where every level gathers its sub-graphs (gather kernel), solves them (Lanczos
kernels) and sweeps them (sweep kernels); the "torch" run is the same call on the torch backend. A
second test feeds padded mixed-size buckets of real sub-graphs (NaN padding) to the kernels directly.

How the kernels are reached on CPU tensors (``route_to_kernels``), until the dispatch accepts an
emulated device: ``DIFFCUT_GPU_BACKEND=cuda`` is set; every ``select_backend`` (in the dispatch and
in the modules that import it) answers "cuda" for any tensor; the dispatch's device query (when it
has one) returns the emulated H100; the recursion's ``sweep_cut_clean`` (torch only) is replaced by
``sweep_cut_cuda``; ``harness.patch_wrappers`` points kernel lookup and CUDA checks at the emulator.
``recursive_ncut`` gets ``backend=`` as soon as its signature has it.
"""

from __future__ import annotations

import collections
import importlib
import inspect
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tests import conftest
from tests.kernels.emu import harness

SHARED = Path(os.environ.get("DIFFCUT_SHARED", conftest.SHARED))  # ../shared; override from a worktree
DINOV2 = SHARED / "models" / "dinov2-small"
BSDS500 = SHARED / "data" / "bsds500"

pytestmark = [
    pytest.mark.skipif(not harness.HAVE_TOOLS, reason=harness.SKIP_REASON),
    pytest.mark.skipif(
        not (DINOV2 / "config.json").is_file() or not (BSDS500 / "images" / "val").is_dir(),
        reason=f"needs DINOv2-S weights at {DINOV2} and BSDS500 at {BSDS500}",
    ),
]

PHOTOS = ("101087.jpg", "102061.jpg")
SIZE = (224, 224)  # 16 x 16 = 256 tokens


def adjusted_rand_index(a: torch.Tensor, b: torch.Tensor) -> float:
    """Hubert-Arabie ARI of two labelings of the same items (1.0: the same partition)."""
    _, ia = torch.unique(a.flatten(), return_inverse=True)
    _, ib = torch.unique(b.flatten(), return_inverse=True)
    table = torch.zeros(int(ia.max()) + 1, int(ib.max()) + 1, dtype=torch.float64)
    table.index_put_((ia, ib), torch.ones(ia.numel(), dtype=torch.float64), accumulate=True)

    def pairs(x: torch.Tensor) -> float:
        return float((x * (x - 1) / 2).sum())

    total, rows, cols = pairs(table.sum().reshape(1)), pairs(table.sum(1)), pairs(table.sum(0))
    expected = rows * cols / total
    top = (rows + cols) / 2
    return 1.0 if top == expected else (pairs(table) - expected) / (top - expected)


@pytest.fixture(scope="module")
def attention() -> torch.Tensor:
    """(2, 256, 256) float32 head- and layer-averaged DINOv2-S attention of two BSDS500 val photos."""
    from PIL import Image

    from diffcut_gpu.io.images import read_image
    from diffcut_gpu.models.vit import ViTBackbone

    backbone = ViTBackbone.from_pretrained(DINOV2, resolution=SIZE)
    images = []
    for name in PHOTOS:
        rgb = read_image(BSDS500 / "images" / "val" / name)
        rgb = np.asarray(Image.fromarray(rgb).resize(SIZE[::-1], Image.BILINEAR))
        images.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).float() / 255)
    with torch.no_grad():
        out = backbone(torch.stack(images))
    assert out.grid == (16, 16)
    return out.attention.float()


def route_to_kernels(monkeypatch) -> collections.Counter:
    """Send every op with a CUDA kernel to it, on the emulator; returns the launch counter."""
    from diffcut_gpu.kernels import dispatch
    from diffcut_gpu.kernels.sweep import sweep_cut_cuda

    # importlib: diffcut_gpu.spectral exports a function named like its module ``fiedler``
    fiedler, graph, recursion, subgraph, sweep = (
        importlib.import_module(f"diffcut_gpu.spectral.{name}")
        for name in ("fiedler", "graph", "recursion", "subgraph", "sweep")
    )
    harness.patch_wrappers(monkeypatch)
    monkeypatch.setenv(dispatch.ENV_VAR, "cuda")

    def forced(tensor, override=None):
        return "cuda"

    for module in (dispatch, fiedler, graph, subgraph, sweep):
        if hasattr(module, "select_backend"):
            monkeypatch.setattr(module, "select_backend", forced)
    if hasattr(dispatch, "device_caps"):
        monkeypatch.setattr(dispatch, "device_caps", lambda tensor: (harness.CAPABILITY, harness.SMEM_OPTIN))
    if hasattr(recursion, "sweep_cut_clean"):

        def sweep_clean(W, x, sizes=None, *, min_side=1):
            return sweep_cut_cuda(W, x, sizes, min_side=min_side, check_values=False)

        monkeypatch.setattr(recursion, "sweep_cut_clean", sweep_clean)
    launches = collections.Counter()
    monkeypatch.setattr(harness, "LAUNCHES", launches)
    return launches


def segment(P: torch.Tensor, backend: str, **kwargs):
    """P -> P^2 -> reversible graph -> recursive NCut, on one backend (the kernels must be routed)."""
    from diffcut_gpu.spectral import power_walk, recursive_ncut, reversibilize

    W = reversibilize(power_walk(P, 2))
    if "backend" in inspect.signature(recursive_ncut).parameters:
        kwargs["backend"] = backend
    return W, recursive_ncut(W, method="lanczos", **kwargs)


@pytest.mark.parametrize("threshold", [0.7, "dynamic"])
def test_recursive_ncut_on_kernels_matches_torch(attention, monkeypatch, threshold):
    kw = dict(threshold=threshold, min_size=4, max_depth=4)
    W_ref, ref = segment(attention, "torch", **kw)
    launches = route_to_kernels(monkeypatch)
    W, seg = segment(attention, "cuda", **kw)

    kernels = {re.sub(r"_(f32|f16|bf16|f64)$", "", name) for name in launches}
    assert {"renorm_rows", "gather_subgraphs", "sweep_rows", "sweep_scan"} <= kernels, launches
    assert {"lanczos_fused"} <= kernels or {"lanczos_matvec", "lanczos_step"} <= kernels, launches
    torch.testing.assert_close(W, W_ref, atol=1e-6 * float(W_ref.max()), rtol=0)  # power walk kernel
    assert seg.labels.shape == ref.labels.shape == (2, 256)
    if torch.equal(seg.parent, ref.parent):  # same hierarchy: the same cut values, up to float32 rounding
        finite = torch.isfinite(ref.ncut)
        assert torch.equal(torch.isfinite(seg.ncut), finite)
        torch.testing.assert_close(seg.ncut[finite], ref.ncut[finite], rtol=1e-3, atol=1e-6)
    for b in range(2):
        assert int(seg.labels[b].unique().numel()) >= 2
        if not torch.equal(seg.labels[b], ref.labels[b]):  # identical on 12 val photos when written
            # The kernel runs single-vector Lanczos, the torch path block Lanczos: the Fiedler vectors
            # agree to about tol / gap, which can move a token across a near-tie of the sweep.
            assert adjusted_rand_index(seg.labels[b], ref.labels[b]) >= 0.99, (b, seg.labels[b], ref.labels[b])


def test_padded_mixed_buckets_of_real_subgraphs(attention, monkeypatch):
    """Real sub-graphs of different sizes in one NaN-padded bucket, in every storage dtype and both
    Lanczos strategies: Lanczos and sweep kernels against the float64 eigh reference and the torch
    sweep on the same x (the stored values, rounding included)."""
    from diffcut_gpu.kernels.lanczos import lanczos_fiedler_cuda
    from diffcut_gpu.kernels.sweep import sweep_cut_cuda
    from diffcut_gpu.spectral.fiedler import eigh_fiedler
    from diffcut_gpu.spectral.graph import reversibilize
    from diffcut_gpu.spectral.sweep import sweep_cut

    harness.patch_wrappers(monkeypatch)
    W = reversibilize(attention.double())
    W = W / W.amax(dim=(-1, -2), keepdim=True)
    g = torch.Generator().manual_seed(0)
    sizes = torch.tensor([128, 97, 40, 17])
    bucket = torch.full((4, 128, 128), float("nan"), dtype=torch.float64)
    for i, s in enumerate(sizes.tolist()):
        ids = torch.sort(torch.randperm(256, generator=g)[:s]).values  # a token subset of one photo
        bucket[i, :s, :s] = W[i % 2][ids][:, ids]
    valid = torch.arange(128) < sizes.unsqueeze(1)
    block = valid.unsqueeze(-1) & valid.unsqueeze(-2)
    runs = [(torch.float32, "fused"), (torch.float16, "tiled"), (torch.bfloat16, "fused")]
    for dtype, strategy in runs:
        stored = bucket.to(dtype)
        clean = torch.where(block, stored.double(), torch.zeros((), dtype=torch.float64))
        ref = eigh_fiedler(clean, sizes)
        res = lanczos_fiedler_cuda(stored, sizes, strategy=strategy)
        assert bool(res.converged.all()), (dtype, strategy, res.residual)
        torch.testing.assert_close(res.lam.double(), ref.lam, atol=5e-5, rtol=0)
        cos = (res.x.double() * ref.x).sum(-1) / (res.x.double().norm(dim=-1) * ref.x.norm(dim=-1))
        assert (cos >= 1 - 1e-4).all(), (dtype, strategy, cos)
        ncut, mask = sweep_cut_cuda(stored, res.x, sizes, min_side=4)
        ref_ncut, ref_mask = sweep_cut(clean, res.x, sizes, min_side=4)
        torch.testing.assert_close(ncut, ref_ncut, rtol=1e-5, atol=1e-9)
        assert torch.equal(mask, ref_mask)
