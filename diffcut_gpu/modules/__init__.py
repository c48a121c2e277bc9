"""Drop-in ``torch.nn.Module``s: ``RWNCut`` (graph -> labels) and ``DiffCut`` (images -> labels)."""

from .diffcut import DiffCut, DiffCutOutput
from .rwncut import RWNCut, RWNCutOutput

__all__ = ["DiffCut", "DiffCutOutput", "RWNCut", "RWNCutOutput"]
