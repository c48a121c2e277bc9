"""Attention you already have -> the row-stochastic (B, N, N) input of the cut."""

from __future__ import annotations

import types

import pytest
import torch

from diffcut_gpu import RWNCut, hf_attention_to_transition
from diffcut_gpu.attention import attention_to_transition, row_tolerance, special_tokens


def _hf_attentions(layers=3, b=2, heads=4, special=5, n=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    t = special + n
    return tuple(torch.softmax(3 * torch.randn(b, heads, t, t, generator=g, dtype=torch.float64), -1).to(dtype)
                 for _ in range(layers))


def test_matches_ref():
    att = _hf_attentions()
    P = hf_attention_to_transition(att, num_special_tokens=5, layers=(-2, -1))
    ref = torch.stack([a.mean(1) for a in att[-2:]]).mean(0)[:, 5:, 5:]
    ref = ref / ref.sum(-1, keepdim=True)
    assert P.dtype == torch.float64 and P.shape == (2, 16, 16)
    torch.testing.assert_close(P, ref, rtol=1e-12, atol=1e-14)
    all_layers = hf_attention_to_transition(att, num_special_tokens=5)
    ref_all = torch.stack([a.mean(1) for a in att]).mean(0)[:, 5:, 5:]
    torch.testing.assert_close(all_layers, ref_all / ref_all.sum(-1, keepdim=True), rtol=1e-12, atol=1e-14)
    assert RWNCut(min_size=2)(P.float(), grid=(4, 4)).shape == (2, 4, 4)


def test_low_precision_layers():
    att = _hf_attentions(dtype=torch.bfloat16, special=1)
    P = hf_attention_to_transition(att, num_special_tokens=1)
    assert P.dtype == torch.float32
    torch.testing.assert_close(P.sum(-1), torch.ones(2, 16), rtol=0, atol=1e-6)


def test_special_tokens_from_config():
    assert special_tokens(types.SimpleNamespace()) == 1
    assert special_tokens(types.SimpleNamespace(num_register_tokens=4)) == 5


def test_row_tolerance_scales_with_dtype():
    assert row_tolerance(torch.float32) == row_tolerance(torch.float64) == 1e-4
    assert row_tolerance(torch.float16) < 2e-3 < row_tolerance(torch.bfloat16) < 0.03


def test_attention_to_transition_heads_and_renorm():
    att = _hf_attentions(layers=1, special=0, dtype=torch.float16)[0]
    P = attention_to_transition(att)
    ref = att.float().mean(1)
    torch.testing.assert_close(P, ref / ref.sum(-1, keepdim=True))


def test_exception():
    att = _hf_attentions()
    with pytest.raises(ValueError, match="num_special_tokens"):
        hf_attention_to_transition(att, num_special_tokens=21)
    with pytest.raises(ValueError, match="num_special_tokens"):
        hf_attention_to_transition(att, num_special_tokens=-1)
    with pytest.raises(ValueError, match="layers"):
        hf_attention_to_transition(att, layers=(3,))
    with pytest.raises(ValueError, match="layers"):
        hf_attention_to_transition(att, layers=())
    with pytest.raises(ValueError, match="attentions"):
        hf_attention_to_transition(())
    with pytest.raises(ValueError, match="attentions"):
        hf_attention_to_transition((att[0], att[1][:, :, :-1, :-1]))
    bad = att[0].clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        hf_attention_to_transition((bad,))
    with pytest.raises(ValueError, match="rows sum to 1"):  # already cut: use the right count instead
        hf_attention_to_transition((att[0][:, :, 5:, 5:],), num_special_tokens=0)
    only_cls = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    only_cls[..., 0] = 1.0
    with pytest.raises(ValueError, match="special token"):
        hf_attention_to_transition(only_cls, num_special_tokens=1)
