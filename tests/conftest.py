"""Shared fixtures: deterministic random graphs that look like attention, and paths to shared data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DINOV2 = SHARED / "models" / "dinov2-small"
BSDS500 = SHARED / "data" / "bsds500"

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


def attention_like(b: int, n: int, *, rank: int = 8, temperature: float = 3.0, seed: int = 0,
                   dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Row-stochastic (B, N, N): softmax of random low-rank scores, like self-attention probabilities."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, n, rank, generator=g, dtype=torch.float64)
    k = torch.randn(b, n, rank, generator=g, dtype=torch.float64)
    scores = temperature * q @ k.transpose(-1, -2) / rank**0.5
    return torch.softmax(scores, dim=-1).to(dtype)


def planted_attention(b: int, sizes: list[int], *, inside: float = 1.0, outside: float = 0.02, noise: float = 0.1,
                      seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """Row-stochastic walk with planted blocks; returns (P (B, N, N), truth (N,) block ids)."""
    g = torch.Generator().manual_seed(seed)
    truth = torch.cat([torch.full((s,), i) for i, s in enumerate(sizes)])
    same = (truth[:, None] == truth[None, :]).double()
    base = same * inside + (1 - same) * outside
    w = base.unsqueeze(0) * (1 + noise * torch.rand(b, len(truth), len(truth), generator=g, dtype=torch.float64))
    return (w / w.sum(-1, keepdim=True)).to(dtype), truth


@pytest.fixture
def rng() -> torch.Generator:
    return torch.Generator().manual_seed(1234)
