"""Attention probabilities as the cut wants them: ``(B, N, N)`` row-stochastic over image tokens.

Two entry points, so that nobody renormalises by hand:

* `attention_to_transition`: attention you already have, ``(B, N, N)`` or ``(B, heads, N, N)``, in any
  float dtype. Rows must sum to 1 within what the dtype can hold (`row_tolerance`: a bf16 softmax is
  off by up to about 2e-3); they are then upcast to float32 (float64 stays) and renormalised exactly.
* `hf_attention_to_transition`: the ``outputs.attentions`` tuple of a Hugging Face vision transformer
  (``output_attentions=True``), one ``(B, heads, S + N, S + N)`` tensor per layer, with ``S`` special
  tokens first (CLS, then any registers). The chosen layers are averaged over heads and layers, the
  special rows and columns dropped, and the rows renormalised:

      A = mean_l mean_k attentions[l][:, k]          # (B, S + N, S + N), rows sum to 1
      P = A[:, S:, S:] / A[:, S:, S:].sum(-1, keepdim=True)

Example:
    >>> out = model(pixels, output_attentions=True)                       # doctest: +SKIP
    >>> P = hf_attention_to_transition(out.attentions, num_special_tokens=special_tokens(model.config))
    >>> labels = RWNCut()(P, grid=(h, w))                                 # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_finite, check_nonnegative, check_tensor

__all__ = ["attention_to_transition", "hf_attention_to_transition", "row_tolerance", "special_tokens"]


def row_tolerance(dtype: torch.dtype) -> float:
    """How far from 1 a row sum of softmax probabilities stored in ``dtype`` may be: two units of
    rounding of the dtype (each stored probability is off by at most half a unit, relative, and they
    sum to 1), and never below 1e-4 (float32 sums over thousands of tokens)."""
    return max(1e-4, 2 * torch.finfo(dtype).eps)


def _compute_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_probabilities(name: str, x: Tensor) -> None:
    check_tensor(name, x)
    if not x.is_floating_point():
        raise ValueError(
            f"{name}: expected attention probabilities in a floating dtype, got {x.dtype}; integer or "
            "boolean maps are not probabilities"
        )
    check_finite(name, x)
    check_nonnegative(name, x)


def attention_to_transition(x: Tensor, *, name: str = "x") -> Tensor:
    """``(B, N, N)`` or ``(B, heads, N, N)`` attention probabilities -> ``(B, N, N)`` row-stochastic.

    Heads are averaged. The result is float32 (float64 for float64 input) with rows renormalised to sum
    to 1. Raises ``ValueError`` naming ``name`` for a wrong shape, a non-float dtype, NaN/Inf, negative
    entries, or rows whose sums are further from 1 than `row_tolerance` of the input dtype (for
    example attention whose CLS column was dropped: use `hf_attention_to_transition`).
    """
    check_tensor(name, x)
    if x.ndim not in (3, 4) or x.shape[-1] != x.shape[-2]:
        raise ValueError(
            f"{name}: expected attention (B, N, N) or (B, heads, N, N), got {tuple(x.shape)}; for (B, N, C) "
            "token features use source='features'"
        )
    _check_probabilities(name, x)
    dtype = _compute_dtype(x)
    P = x.mean(1, dtype=dtype) if x.ndim == 4 else x.to(dtype)
    if P.numel() == 0:
        return P
    sums = P.sum(-1, keepdim=True)
    err = float((sums - 1).abs().max())
    tol = row_tolerance(x.dtype)
    if err > tol:
        raise ValueError(
            f"{name}: expected attention probabilities whose rows sum to 1 (within {tol:.2g} for {x.dtype}), "
            f"got a row sum off by {err:.3g}. Attention with special tokens removed: build it with "
            "hf_attention_to_transition(attentions, num_special_tokens=...); other row-normalisable maps: "
            "pass x / x.sum(-1, keepdim=True); token features: source='features'"
        )
    return P / sums


def special_tokens(config: object) -> int:
    """Special tokens before the patch tokens of a Hugging Face ViT: the CLS token plus any registers
    (``config.num_register_tokens``, as in DINOv2 with registers)."""
    return 1 + int(getattr(config, "num_register_tokens", 0) or 0)


def hf_attention_to_transition(
    attentions: Sequence[Tensor] | Tensor,
    *,
    num_special_tokens: int = 1,
    layers: Sequence[int] | None = None,
) -> Tensor:
    """Hugging Face ``outputs.attentions`` -> ``(B, N, N)`` row-stochastic over the patch tokens.

    Args:
        attentions: one ``(B, heads, T, T)`` tensor per layer (the tuple transformers returns with
            ``output_attentions=True``), or a single such tensor; ``T = num_special_tokens + N``.
        num_special_tokens: tokens before the patches: 1 (CLS) for ViT / DINOv2, ``1 + registers`` for
            DINOv2 with registers (`special_tokens(model.config)`), 0 for models without them.
        layers: indices of the layers to average (negative counts from the end); ``None``: all given.

    Returns:
        float32 (float64 for float64 input) ``(B, N, N)``; each layer's heads are averaged, then the
        layers, then the special tokens are dropped and the rows renormalised.
    """
    if isinstance(attentions, Tensor):
        attentions = (attentions,)
    attentions = tuple(attentions)
    if not attentions:
        raise ValueError("attentions: expected one (B, heads, T, T) tensor per layer, got an empty sequence")
    if isinstance(num_special_tokens, bool) or not isinstance(num_special_tokens, int) or num_special_tokens < 0:
        raise ValueError(f"num_special_tokens: expected an int >= 0, got {num_special_tokens!r}")
    chosen = range(len(attentions)) if layers is None else layers
    picked = []
    for i in chosen:
        if isinstance(i, bool) or not isinstance(i, int) or not -len(attentions) <= i < len(attentions):
            raise ValueError(f"layers: expected indices in [-{len(attentions)}, {len(attentions)}), got {layers!r}")
        picked.append(attentions[i])
    if not picked:
        raise ValueError("layers: expected at least one layer index, got an empty sequence")
    first = picked[0]
    check_tensor("attentions", first)
    if first.ndim != 4 or first.shape[-1] != first.shape[-2]:
        raise ValueError(f"attentions: expected (B, heads, T, T) tensors, got {tuple(first.shape)}")
    s = num_special_tokens
    if first.shape[-1] <= s:
        raise ValueError(
            f"num_special_tokens: expected fewer than the {first.shape[-1]} tokens of the attention, got {s}"
        )
    dtype = _compute_dtype(first)
    acc = None
    for layer in picked:  # a running sum: never more than one extra (B, T, T) map
        if layer.shape != first.shape:
            raise ValueError(
                f"attentions: expected every layer of shape {tuple(first.shape)}, got {tuple(layer.shape)}"
            )
        full = attention_to_transition(layer, name="attentions")  # checks rows of the full map
        acc = full if acc is None else acc + full
    patch = acc[:, s:, s:]
    mass = patch.sum(-1, keepdim=True)
    if patch.numel() and float(mass.min()) <= 0:
        raise ValueError(
            "attentions: expected every patch token to attend to some patch token, got a row whose whole mass "
            f"sits on the {s} special token(s); check num_special_tokens"
        )
    return (patch / mass).to(dtype)
