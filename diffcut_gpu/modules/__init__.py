"""Drop-in ``torch.nn.Module``s: ``RWNCut`` (graph -> labels) and ``DiffCut`` (images -> labels)."""

from .rwncut import RWNCut, RWNCutOutput

__all__ = ["RWNCut", "RWNCutOutput"]
