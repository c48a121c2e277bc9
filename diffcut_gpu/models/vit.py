"""Hugging Face vision transformers (DINOv2, ViT, ...) as a source of attention graphs.

`ViTBackbone` turns images ``(B, 3, H, W)`` in ``[0, 1]`` into a row-stochastic transition matrix
``P: (B, N, N)`` over the ``N = h * w`` patch tokens plus their features ``(B, N, C)``.

``P`` is the attention of the chosen layers, averaged over heads and then over layers, restricted to
the patch tokens (the CLS token and any register tokens removed) and renormalised so every row sums
to 1 (the softmax of a recorded layer is taken in float32 whatever the model's dtype):

    A = mean_l mean_k softmax(Q_lk K_lk^T / sqrt(d))        # (B, S + N, S + N), S special tokens
    P = A[:, S:, S:] / A[:, S:, S:].sum(-1, keepdim=True)   # (B, N, N)

Example:
    >>> backbone = ViTBackbone.from_pretrained("shared/models/dinov2-small")  # doctest: +SKIP
    >>> out = backbone(torch.rand(1, 3, 224, 224))                               # doctest: +SKIP
    >>> out.attention.shape, out.grid                                            # doctest: +SKIP
    (torch.Size([1, 256, 256]), (16, 16))
"""

from __future__ import annotations

import inspect
import json
import math
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from diffcut_gpu.attention.hf import hf_attention_to_transition, special_tokens
from diffcut_gpu.models._loading import first_line, model_source, offline_hint, transformers_dtype
from diffcut_gpu.models.output import BackboneOutput

__all__ = ["DEFAULT_TOKEN_BUDGET", "IMAGENET_MEAN", "IMAGENET_STD", "ViTBackbone", "budget_size"]

#: Tokens an image is resized to hold by default (``DiffCut.from_pretrained``, the CLI): DiffCut's 32x32 grid.
DEFAULT_TOKEN_BUDGET = 1024

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_HOLDS = "a local transformers checkpoint (config.json + weights), e.g. ../shared/models/dinov2-small"
_RANGE_SLACK = 1e-3  # inputs may overshoot [0, 1] by this much (resampling round-off)

_SELECTIVE = "diffcut_gpu_selective"
"""Name of the attention function `ViTBackbone` registers with transformers' ``AttentionInterface``."""


def _selective_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention that computes probabilities only where they are used.

    ``module._diffcut_record`` (set by `ViTBackbone.forward` on the blocks of the model) picks the mode:
    a list: a used layer, its head-averaged probabilities (softmax in float32 or wider) are appended; False:
    an unused layer, fused ``scaled_dot_product_attention`` (no (B, heads, S, S) tensor); absent (the
    model called directly, e.g. with ``output_attentions=True``): plain eager attention, probabilities
    returned, as transformers' own eager path.
    """
    record = getattr(module, "_diffcut_record", None)
    if record is False:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    if record is None:
        probs = F.dropout(F.softmax(scores, dim=-1), p=dropout, training=module.training)
        return torch.matmul(probs, value).transpose(1, 2).contiguous(), probs
    probs = F.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32))
    record.append(probs.mean(dim=1))
    return torch.matmul(probs.to(value.dtype), value).transpose(1, 2).contiguous(), None


def _blocks(model: nn.Module, num_layers: int) -> nn.ModuleList | None:
    """The model's list of transformer blocks (the first ModuleList with one entry per layer)."""
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers:
            return module
    return None


def _use_selective_attention(model: nn.Module, num_layers: int) -> nn.ModuleList | None:
    """Switch ``model`` to `_selective_attention`; its blocks, or None where transformers cannot (then the
    caller falls back to eager attention with ``output_attentions``)."""
    blocks = _blocks(model, num_layers)
    if blocks is None or not hasattr(model, "set_attn_implementation"):
        return None
    try:
        from transformers import AttentionInterface
        from transformers.integrations.sdpa_attention import sdpa_attention_forward  # noqa: F401

        AttentionInterface.register(_SELECTIVE, _selective_attention)
        model.set_attn_implementation(_SELECTIVE)
    except (ImportError, ValueError, AttributeError, TypeError):
        return None
    return blocks


def _import_transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ViTBackbone needs the Hugging Face `transformers` package: pip install diffcut-gpu[vit]"
        ) from err
    return transformers


def _patch_size(config) -> int:
    p = config.patch_size
    if isinstance(p, (tuple, list)):
        if len(set(p)) != 1:
            raise ValueError(f"model.config.patch_size: expected a square patch, got {tuple(p)}")
        p = p[0]
    return int(p)


def _round_to_patch(x: float, patch: int) -> int:
    """Nearest multiple of ``patch`` to ``x`` (halves round up), at least one patch."""
    return max(patch, math.floor(x / patch + 0.5) * patch)


def budget_size(height: int, width: int, cell: int, tokens: int) -> tuple[int, int]:
    """(H, W), multiples of ``cell``, holding about ``tokens`` cells of ``cell`` pixels, aspect ratio kept.

    Both sides are scaled by ``sqrt(tokens * cell^2 / (height * width))`` and rounded to the nearest cell
    (at least one), so a 481x321 photo and a 6000x4000 one get about the same grid (39x26 at 1,024
    tokens of 14 pixels).
    """
    for arg, value in (("height", height), ("width", width), ("cell", cell), ("tokens", tokens)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg}: expected a positive int, got {value!r}")
    scale = math.sqrt(tokens * cell * cell / (height * width))
    return _round_to_patch(height * scale, cell), _round_to_patch(width * scale, cell)


def target_size(
    height: int,
    width: int,
    patch: int,
    resolution: int | tuple[int, int] | None,
    token_budget: int | None = None,
) -> tuple[int, int]:
    """Pixel size the image is resized to before the transformer; both sides are multiples of ``patch``.

    ``resolution=None`` keeps the image size, rounded to the nearest patch multiple, or with a
    ``token_budget`` scales it to about that many tokens (``budget_size``); an ``int`` sets the short
    side (aspect ratio kept); ``(H, W)`` sets both sides (each rounded to a patch multiple).
    """
    if resolution is None and token_budget is not None:
        return budget_size(int(height), int(width), patch, token_budget)
    if resolution is None:
        return _round_to_patch(height, patch), _round_to_patch(width, patch)
    if isinstance(resolution, int):
        scale = resolution / min(height, width)
        return _round_to_patch(height * scale, patch), _round_to_patch(width * scale, patch)
    return _round_to_patch(resolution[0], patch), _round_to_patch(resolution[1], patch)


def _check_resolution(resolution) -> int | tuple[int, int] | None:
    if resolution is None:
        return None
    if isinstance(resolution, int) and not isinstance(resolution, bool):
        if resolution <= 0:
            raise ValueError(f"resolution: expected a positive short side in pixels, got {resolution}")
        return resolution
    if (
        isinstance(resolution, (tuple, list))
        and len(resolution) == 2
        and all(isinstance(r, int) and not isinstance(r, bool) and r > 0 for r in resolution)
    ):
        return int(resolution[0]), int(resolution[1])
    raise ValueError(f"resolution: expected None, a positive int or (H, W) positive ints, got {resolution!r}")


def _check_layers(layers: Sequence[int], num_layers: int, arg: str = "layers") -> tuple[int, ...]:
    if isinstance(layers, int):
        layers = (layers,)
    layers = tuple(layers)
    if not layers:
        raise ValueError(f"{arg}: expected at least one layer index, got an empty sequence")
    for i in layers:
        if not isinstance(i, int) or isinstance(i, bool) or not -num_layers <= i < num_layers:
            raise ValueError(
                f"{arg}: expected layer indices in [-{num_layers}, {num_layers}) for a {num_layers}-layer "
                f"model, got {layers!r}"
            )
    return layers


def _check_stats(value: Sequence[float], arg: str, channels: int, positive: bool) -> tuple[float, ...]:
    value = tuple(float(v) for v in value)
    if len(value) != channels or (positive and min(value) <= 0):
        what = "positive " if positive else ""
        raise ValueError(f"{arg}: expected {channels} {what}floats (one per channel), got {value!r}")
    return value


class ViTBackbone(nn.Module):
    """Wrap a Hugging Face ViT so that it returns a patch-token transition matrix and features.

    Args:
        model: a transformers vision encoder (``Dinov2Model``, ``Dinov2WithRegistersModel``, ``ViTModel``
            or what ``AutoModel`` gives for them). It is switched to eager attention (the only kind that
            returns attention probabilities) and to eval mode.
        layers: indices into the model's blocks (negative counts from the end) whose attention is averaged.
        resolution: ``None`` keeps the input size rounded to the patch multiple (or applies
            ``token_budget``); an ``int`` is the short side in pixels; ``(H, W)`` is both sides. Position
            embeddings are interpolated to any grid.
        token_budget: with ``resolution=None``, resize every image to hold about this many tokens, aspect
            kept (``budget_size``); ``None`` keeps the input size. ``DiffCut.from_pretrained`` sets
            ``DEFAULT_TOKEN_BUDGET``.
        feature_layer: ``None`` takes the features from the last hidden state (after the final layer
            norm); an ``int`` takes the output of that block (``hidden_states[feature_layer + 1]``, so
            ``-1`` is the last block before the final norm).
        mean, std: per-channel normalisation applied to the ``[0, 1]`` input (ImageNet by default).

    Forward:
        images ``(B, 3, H, W)`` float in ``[0, 1]`` on the module's device ->
        `BackboneOutput` with ``attention (B, N, N)``, ``features (B, N, C)``, ``grid (h, w)``,
        ``N = h * w``. Runs without autograd; outputs are float32 (float64 for a float64 model).
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        layers: Sequence[int] = (-4, -3, -2, -1),
        resolution: int | tuple[int, int] | None = None,
        token_budget: int | None = None,
        feature_layer: int | None = None,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "patch_size") or not hasattr(config, "num_hidden_layers"):
            raise ValueError(
                f"model: expected a Hugging Face vision transformer with a config holding patch_size and "
                f"num_hidden_layers, got {type(model).__name__}"
            )
        num_layers = int(config.num_hidden_layers)
        channels = int(getattr(config, "num_channels", 3))
        self.layers = _check_layers(layers, num_layers)
        self.feature_layer = (
            None if feature_layer is None else _check_layers(feature_layer, num_layers, "feature_layer")[0]
        )
        self.resolution = _check_resolution(resolution)
        if token_budget is not None and (
            isinstance(token_budget, bool) or not isinstance(token_budget, int) or token_budget < 1
        ):
            raise ValueError(f"token_budget: expected None or a positive number of tokens, got {token_budget!r}")
        self.token_budget = token_budget
        self.patch_size = _patch_size(config)
        self.num_special_tokens = special_tokens(config)
        self.num_channels = channels
        mean_t = torch.tensor(_check_stats(mean, "mean", channels, positive=False)).view(1, -1, 1, 1)
        std_t = torch.tensor(_check_stats(std, "std", channels, positive=True)).view(1, -1, 1, 1)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

        # Probabilities only for the used layers, fused SDPA elsewhere; else eager everywhere.
        self._blocks = _use_selective_attention(model, num_layers)
        if self._blocks is None and getattr(config, "_attn_implementation", "eager") != "eager":
            if hasattr(model, "set_attn_implementation"):
                model.set_attn_implementation("eager")
            else:  # transformers < 4.48
                config._attn_implementation = "eager"
        self.model = model.eval()
        self._interpolate_kw = (
            {"interpolate_pos_encoding": True}
            if "interpolate_pos_encoding" in inspect.signature(model.forward).parameters
            else {}
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        layers: Sequence[int] = (-4, -3, -2, -1),
        **kwargs,
    ) -> ViTBackbone:
        """Load a local checkpoint folder or a hub name with ``transformers.AutoModel``.

        ``dtype=None`` keeps the checkpoint config's dtype; ``kwargs`` go to the constructor
        (``resolution``, ``feature_layer``, ``mean``, ``std``). When ``mean``/``std`` are not given and the
        folder has a ``preprocessor_config.json``, its ``image_mean``/``image_std`` are used.
        """
        transformers = _import_transformers()
        source = model_source(name_or_path, holds=_HOLDS)
        if source.local and os.path.isfile(os.path.join(source.path, "model_index.json")):
            raise OSError(
                f"name_or_path: expected a transformers ViT checkpoint, got '{source.name}', a diffusers "
                "pipeline snapshot; load it with backbone='diffusion' (the command line's default)"
            )
        load_kw: dict = {"attn_implementation": "eager", **transformers_dtype(transformers, dtype)}
        try:
            model = transformers.AutoModel.from_pretrained(source.path, **load_kw)
        except (OSError, ValueError) as err:
            raise OSError(
                f"name_or_path: could not load model '{source.name}' ({first_line(err)}). "
                + offline_hint(source, holds=_HOLDS, python="ViTBackbone.from_pretrained('PATH')")
            ) from None

        if source.local and ("mean" not in kwargs or "std" not in kwargs):
            proc = os.path.join(source.path, "preprocessor_config.json")
            if os.path.isfile(proc):
                with open(proc, encoding="utf-8") as fh:
                    cfg = json.load(fh)
                if "image_mean" in cfg and "image_std" in cfg:
                    kwargs.setdefault("mean", cfg["image_mean"])
                    kwargs.setdefault("std", cfg["image_std"])
        backbone = cls(model, layers=layers, **kwargs)
        return backbone.to(device) if device is not None else backbone

    @property
    def size_multiple(self) -> int:
        """Image sides that map onto whole patches are multiples of this (the patch size)."""
        return self.patch_size

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def _check_images(self, images: Tensor) -> None:
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != self.num_channels:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images: expected a tensor of shape (B, {self.num_channels}, H, W), got {got}")
        if not images.is_floating_point():
            raise ValueError(f"images: expected a float tensor with values in [0, 1], got {images.dtype}")
        if images.device != self.device:
            raise ValueError(
                f"images: expected a tensor on the module's device {self.device}, got {images.device}; "
                f"move the images or the module with .to()"
            )
        if images.numel() == 0:
            raise ValueError(f"images: expected a non-empty batch, got shape {tuple(images.shape)}")
        lo, hi = torch.aminmax(images)
        if lo.item() < -_RANGE_SLACK or hi.item() > 1 + _RANGE_SLACK:
            raise ValueError(
                f"images: expected values in [0, 1], got [{lo.item():.4g}, {hi.item():.4g}]; "
                f"divide 8-bit images by 255"
            )

    def preprocess(self, images: Tensor) -> Tensor:
        """Resize ``(B, C, H, W)`` to patch multiples and normalise; returns the model's pixel values."""
        height, width = images.shape[-2:]
        size = target_size(height, width, self.patch_size, self.resolution, self.token_budget)
        x = images.float() if images.dtype in (torch.float16, torch.bfloat16) else images
        if size != (height, width):
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        return x.to(next(self.model.parameters()).dtype)

    @torch.no_grad()
    def forward(self, images: Tensor) -> BackboneOutput:
        self._check_images(images)
        pixels = self.preprocess(images)
        h, w = pixels.shape[-2] // self.patch_size, pixels.shape[-1] // self.patch_size
        out, attentions = self._run(pixels)
        if not attentions:
            raise RuntimeError(
                "model returned no attention probabilities; it must run with eager attention "
                "(model.set_attn_implementation('eager'))"
            )
        s = self.num_special_tokens
        if attentions[0].shape[-1] != s + h * w:
            raise RuntimeError(
                f"model returned {attentions[0].shape[-1]} tokens, expected {s} special + {h}x{w} patch "
                f"tokens; is config.num_register_tokens right?"
            )
        # Used layers only, heads already averaged by _run: one (B, 1, T, T) map per layer for the shared
        # helper, which averages the layers, drops the special tokens and renormalises the rows.
        attention = hf_attention_to_transition([a.unsqueeze(1) for a in attentions], num_special_tokens=s)
        dtype = attention.dtype

        hidden = (
            out.last_hidden_state
            if self.feature_layer is None
            else out.hidden_states[self.feature_layer + 1 if self.feature_layer >= 0 else self.feature_layer]
        )
        features = hidden[:, s:].to(dtype).contiguous()
        return BackboneOutput(attention=attention, features=features, grid=(h, w))

    def _run(self, pixels: Tensor) -> tuple[object, list[Tensor]]:
        """Model output and the head-averaged attention (B, S + N, S + N) of each used layer."""
        kw = dict(output_hidden_states=self.feature_layer is not None, **self._interpolate_kw)
        if self._blocks is None:  # eager fallback: every layer's probabilities, keep the used ones
            out = self.model(pixels, output_attentions=True, **kw)
            return out, [out.attentions[i].mean(dim=1) for i in self.layers] if out.attentions else []
        num = len(self._blocks)
        used = sorted({i % num for i in self.layers})
        records: dict[int, list[Tensor]] = {i: [] for i in used}
        try:
            for i, block in enumerate(self._blocks):
                for module in block.modules():
                    module._diffcut_record = records[i] if i in records else False
            out = self.model(pixels, **kw)
        finally:
            for block in self._blocks:
                for module in block.modules():
                    module.__dict__.pop("_diffcut_record", None)
        # A layer listed twice in ``layers`` counts twice, as in the plain average.
        return out, [records[i % num][0] for i in self.layers if records[i % num]]

    def extra_repr(self) -> str:
        return (
            f"layers={self.layers}, resolution={self.resolution}, token_budget={self.token_budget}, "
            f"feature_layer={self.feature_layer}, "
            f"patch_size={self.patch_size}, num_special_tokens={self.num_special_tokens}"
        )
