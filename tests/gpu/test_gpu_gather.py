"""gather_subgraphs_cuda: bit-exact against the torch gather for every dtype, zeros outside the blocks."""

from __future__ import annotations

import pytest
import torch

from tests.gpu.conftest import attention_graph, poison_allocator, requires_gpu

pytestmark = requires_gpu


def _case(b: int, n_full: int, widths: int, count: int, dtype: torch.dtype, seed: int):
    g = torch.Generator(device="cuda").manual_seed(seed)
    W = attention_graph(b, n_full, seed=seed).to(dtype)
    sizes = torch.randint(1, widths + 1, (count,), device="cuda", generator=g)
    image_index = torch.randint(0, b, (count,), device="cuda", generator=g)
    node_index = torch.zeros(count, widths, dtype=torch.int64, device="cuda")
    for s in range(count):
        perm = torch.randperm(n_full, device="cuda", generator=g)[: int(sizes[s])]
        node_index[s, : int(sizes[s])] = torch.sort(perm).values
    return W, image_index, node_index, sizes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("n_full,width,count", [(2, 2, 3), (17, 16, 5), (100, 37, 9), (1024, 256, 6)])
def test_matches_ref(dtype, n_full, width, count):
    from diffcut_gpu.kernels import gather_subgraphs_cuda
    from diffcut_gpu.spectral.subgraph import gather_subgraphs

    W, image_index, node_index, sizes = _case(3, n_full, min(width, n_full), count, dtype, seed=n_full)
    poison_allocator()
    out = gather_subgraphs_cuda(W, image_index, node_index, sizes)
    ref = gather_subgraphs(W, image_index, node_index, sizes)
    assert out.dtype == W.dtype and out.shape == ref.shape
    assert torch.equal(out, ref)  # pure data movement: bit-exact, NaN-free
    w = node_index.shape[1]
    valid = torch.arange(w, device="cuda") < sizes.unsqueeze(1)
    assert (out[~(valid.unsqueeze(-1) & valid.unsqueeze(-2))] == 0).all()


def test_non_contiguous_source():
    from diffcut_gpu.kernels import gather_subgraphs_cuda
    from diffcut_gpu.spectral.subgraph import gather_subgraphs

    W, image_index, node_index, sizes = _case(2, 64, 20, 4, torch.float32, seed=5)
    Wt = W.transpose(1, 2)  # symmetric values, column stride != 1
    assert torch.equal(
        gather_subgraphs_cuda(Wt, image_index, node_index, sizes),
        gather_subgraphs(Wt, image_index, node_index, sizes),
    )


def test_exception():
    from diffcut_gpu.kernels import gather_subgraphs_cuda

    W, image_index, node_index, sizes = _case(2, 16, 8, 3, torch.float32, seed=1)
    with pytest.raises(ValueError, match="node_index"):
        gather_subgraphs_cuda(W, image_index, node_index[0], sizes)
    with pytest.raises(ValueError, match="integer"):
        gather_subgraphs_cuda(W, image_index.float(), node_index, sizes)
    with pytest.raises(ValueError, match="CUDA tensor"):
        gather_subgraphs_cuda(W.cpu(), image_index, node_index, sizes)
