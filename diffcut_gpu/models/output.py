"""The one result type every backbone returns: attention, features and the token grid."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class BackboneOutput:
    """What a backbone hands to the spectral core.

    Attributes:
        attention: ``(B, N, N)`` row-stochastic transition matrix over the ``N = h * w`` image tokens
            (special tokens removed, rows renormalised to sum to 1), float32 or wider.
        features: ``(B, N, C)`` token features on the same grid, row-major (token ``i`` sits at
            ``(i // w, i % w)``).
        grid: ``(h, w)`` token grid.
    """

    attention: Tensor
    features: Tensor
    grid: tuple[int, int]
