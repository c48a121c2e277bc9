"""The one result type every backbone returns: attention, features and the token grid; short reprs.

Result objects hold large tensors (an ``(B, N, N)`` graph is millions of numbers), so their ``repr``
shows shapes and dtypes, never values: ``short_repr`` does that for any dataclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from torch import Tensor

__all__ = ["BackboneOutput", "short_repr"]


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        return f"Tensor{tuple(value.shape)} {dtype} {value.device}"
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        labels = getattr(value, "labels", None)
        if isinstance(labels, Tensor):  # a Segmentation: say what it holds
            nodes = getattr(value, "parent", None)
            count = f", nodes={nodes.shape[0]}" if isinstance(nodes, Tensor) else ""
            return f"{type(value).__name__}(labels={_describe(labels)}{count})"
        return f"{type(value).__name__}(...)"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"{type(value).__name__} of {len(value)}"
    return repr(value)


def short_repr(obj: object) -> str:
    """``Name(field=Tensor(2, 64, 64) int64 cpu, ...)``: the fields of a dataclass, tensors by shape."""
    fields = ", ".join(f"{f.name}={_describe(getattr(obj, f.name))}" for f in dataclasses.fields(obj))
    return f"{type(obj).__name__}({fields})"


@dataclass(repr=False)
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

    __repr__ = short_repr
