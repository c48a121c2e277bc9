"""The method mini-language of the evaluation grid: ``kind[:key=value,...]`` <-> ``Method``.

Example: ``"rwncut:power=2,threshold=0.3"`` is our recursion on ``reversibilize(P^2)`` cut while NCut < 0.3.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["KINDS", "Method", "check_threshold", "parse_method", "resolve_threshold"]

KINDS = ("rwncut", "features", "kmeans", "diffcut")


@dataclass(frozen=True)
class Method:
    """One segmentation method of the grid; ``name`` round-trips through ``parse_method``.

    Attributes:
        kind: "rwncut" (our recursion on ``reversibilize(P^power)``), "features" (our recursion on the
            DiffCut feature graph ``cosine_affinity(F, alpha)``), "kmeans" (cosine k-means on the rows of
            ``P^power`` when ``on="attention"``, on the features when ``on="features"``, with per image the
            number of segments of ``rwncut`` at the same power and threshold), "diffcut" (DiffCut's
            per-node recursion, dense eigh + 100 thresholds, on the feature graph; constant tau only).
        threshold: constant tau (split while NCut < tau) or a policy name ("dynamic", "null", "otsu",
            "gap", ... : ``diffcut_gpu.spectral.policy_names()``).
        power: k of the walk ``P^k`` (rwncut, kmeans).
        on: descriptors clustered by kmeans: "attention" or "features".
        alpha: sharpening exponent of the feature graph (features, diffcut).
    """

    kind: str
    threshold: float | str = "dynamic"
    power: int = 1
    on: str = "attention"
    alpha: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"method: expected a kind in {KINDS}, got {self.kind!r}")
        if isinstance(self.power, bool) or not isinstance(self.power, int) or self.power < 1:
            raise ValueError(f"power: expected an int >= 1, got {self.power!r}")
        if self.on not in ("attention", "features"):
            raise ValueError(f"on: expected 'attention' or 'features', got {self.on!r}")
        if self.kind == "diffcut" and isinstance(self.threshold, str):
            raise ValueError(f"threshold: expected a number for the diffcut baseline, got {self.threshold!r}")
        check_threshold(self.threshold)  # fail early on an unknown policy name

    @property
    def name(self) -> str:
        tau = self.threshold if isinstance(self.threshold, str) else f"{self.threshold:g}"
        parts = [f"threshold={tau}"]
        if self.kind in ("rwncut", "kmeans"):
            parts.insert(0, f"power={self.power}")
        if self.kind == "kmeans":
            parts.insert(0, f"on={self.on}")
        if self.kind in ("features", "diffcut") and self.alpha != 10.0:
            parts.append(f"alpha={self.alpha:g}")
        return f"{self.kind}:" + ",".join(parts)

    def graph(self) -> tuple:
        """Key of the graph this method cuts: ("attention", k) or ("features", alpha)."""
        if self.kind in ("rwncut", "kmeans"):
            return ("attention", self.power)
        return ("features", self.alpha)


def parse_method(text: str, *, threshold: float | str = "dynamic", power: int = 1) -> Method:
    """``"kind[:key=value,...]"`` -> ``Method``; ``threshold`` and ``power`` fill keys that are not given.

    Keys: threshold (a number or a policy name), power, on, alpha.
    Example: ``"rwncut:power=2,threshold=0.3"``.
    """
    kind, _, rest = text.strip().partition(":")
    kw: dict = {"threshold": threshold, "power": power}
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, eq, value = part.partition("=")
        if not eq or key not in ("threshold", "power", "on", "alpha"):
            raise ValueError(f"method: expected 'kind[:key=value,...]' with keys threshold, power, on, "
                             f"alpha, got {text!r}")
        kw[key] = _number_or_name(value) if key == "threshold" else value
    try:
        kw["power"] = int(kw["power"])
        if "alpha" in kw:
            kw["alpha"] = float(kw["alpha"])
    except ValueError:
        raise ValueError(f"method: expected an int power and a float alpha, got {text!r}") from None
    return Method(kind, **kw)


def _number_or_name(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def check_threshold(threshold: float | str) -> None:
    """Raise unless ``threshold`` is a valid constant tau or a registered policy name."""
    from diffcut_gpu.spectral import make_policy, policy_names

    if isinstance(threshold, str):
        if threshold not in policy_names():
            raise ValueError(f"threshold: expected a number, 'dynamic' or one of {list(policy_names())}, "
                             f"got {threshold!r}")
        return
    make_policy(threshold)  # a constant: checks its range


def resolve_threshold(threshold: float | str, graph=None):
    """A ``ThresholdPolicy`` from a number, "dynamic" or any policy name (``spectral.make_policy``).

    ``graph``: the ``(B, N, N)`` graph that is cut, for the policies that score partitions on it.
    """
    from diffcut_gpu.spectral import make_policy

    return make_policy(threshold, graph=graph)
