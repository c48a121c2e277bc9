"""Drop-in ``torch.nn.Module``s: ``RWNCut`` (graph -> labels) and ``DiffCut`` (images -> labels)."""

from .config import CutConfig
from .diffcut import DiffCut, DiffCutOutput
from .rwncut import RWNCut, RWNCutOutput

__all__ = ["CutConfig", "DiffCut", "DiffCutOutput", "RWNCut", "RWNCutOutput"]
