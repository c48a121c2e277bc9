"""The settings of a cut, written once: defaults and checks shared by ``RWNCut`` and ``DiffCut``.

``CutConfig()`` holds the defaults both modules use (and every example in the docs):
``source="attention"``, ``threshold="dynamic"``, ``upsample="concept"``, ... Building one checks every
value, so a module with a bad setting fails at construction, not at its first call.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .._checks import check_choice, check_int
from ..kernels.dispatch import requested_backend
from ..spectral import ThresholdPolicy, make_policy
from ..spectral.fiedler import METHODS

__all__ = ["GRAPHS", "SOURCES", "UPSAMPLE_MODES", "CutConfig", "portable_config"]

SOURCES = ("attention", "features", "both")
GRAPHS = ("reversible", "symmetric", "rows")
UPSAMPLE_MODES = ("concept", "nearest", "majority")


@dataclass(frozen=True)
class CutConfig:
    """Every setting of a cut, with the defaults of ``RWNCut`` and ``DiffCut``; see ``RWNCut`` for each.

    Raises ``ValueError`` naming the setting for any bad value.
    """

    source: str = "attention"
    graph: str = "reversible"
    power: int = 1
    alpha: float = 10.0
    threshold: float | str | ThresholdPolicy = "dynamic"
    segments: int | None = None
    min_size: int = 4
    max_depth: int = 8
    method: str = "auto"
    tol: float = 1e-5
    full_hierarchy: bool | None = None
    upsample: str = "concept"
    refine: bool = False
    backend: str | None = None

    def __post_init__(self) -> None:
        if self.source == "auto":
            raise ValueError(
                "source: expected one of ('attention', 'features', 'both'), got 'auto'; the module no longer "
                "guesses from the values: pass source='attention' for (B, N, N) or (B, heads, N, N) attention "
                "probabilities, source='features' for (B, N, C) token features"
            )
        check_choice("source", self.source, SOURCES)
        check_choice("graph", self.graph, GRAPHS)
        check_choice("upsample", self.upsample, UPSAMPLE_MODES)
        check_choice("method", self.method, METHODS)
        check_int("power", self.power, 1)
        check_int("min_size", self.min_size, 1)
        check_int("max_depth", self.max_depth, 0)
        if self.segments is not None:
            check_int("segments", self.segments, 1)
        if self.source == "features" and self.power != 1:
            raise ValueError(
                f"power: expected 1 with source='features' (the power walk applies to attention), got {self.power}"
            )
        if not _positive_finite(self.alpha):
            raise ValueError(f"alpha: expected a finite number > 0, got {self.alpha!r}")
        if not _positive_finite(self.tol):
            raise ValueError(f"tol: expected a finite number > 0, got {self.tol!r}")
        if self.full_hierarchy is not None and not isinstance(self.full_hierarchy, bool):
            raise ValueError(f"full_hierarchy: expected None, True or False, got {self.full_hierarchy!r}")
        if self.backend is not None:
            requested_backend(self.backend)  # "auto", "torch" or "cuda"; None reads $DIFFCUT_GPU_BACKEND
        if not isinstance(self.refine, bool):
            raise ValueError(f"refine: expected True or False, got {self.refine!r}")
        policy = make_policy(self.threshold)  # raises on a bad number or name
        if policy.needs_full_hierarchy and self.full_hierarchy is False:
            raise ValueError(
                f"full_hierarchy: {policy!r} reads the full candidate hierarchy, got full_hierarchy=False"
            )

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _positive_finite(value: object) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


def portable_config(config: dict) -> dict:
    """``config`` with only plain values (a ``ThresholdPolicy`` object becomes its repr), so that it can
    sit in a ``state_dict`` loaded with ``torch.load(weights_only=True)`` and be compared."""
    return {k: (v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)) for k, v in config.items()}
