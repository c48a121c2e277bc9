"""Install recording processors on chosen self-attention layers of a diffusers model, then restore.

    with capture_attention(unet, resolutions=(32,), sample_size=(128, 128)) as rec:
        unet(latents, t, encoder_hidden_states=emb)
    P = rec.grid_maps()[(32, 32)]          # (B, 1024, 1024), row-stochastic

Layers are picked by name (glob strings, or compiled ``re`` patterns) and/or by token resolution.
A layer's token grid follows from its place in a ``UNet2DConditionModel`` and the latent size:
``down_blocks.i`` runs at level ``i``, ``mid_block`` at the deepest level, ``up_blocks.j`` at level
``n_down - 1 - j``; level ``l`` has ``ceil(H / 2**l) x ceil(W / 2**l)`` tokens (stride-2 convs with
padding 1). Only the chosen layers' processors are replaced; all are restored on exit, also on error.

A layer whose processor is diffusers' default (``AttnProcessor2_0`` / ``AttnProcessor``) gets a recording
processor that computes the same output. Any other processor (yours, IP-Adapter, LoRA ...) is wrapped:
the map is recorded from the layer's projections, then your processor computes the output, unchanged
(``custom_processors="wrap"``, the default); ``custom_processors="error"`` refuses such a layer instead,
naming it. Never is a custom processor silently bypassed.

What is recorded, in a sampling loop: every forward of ``model`` inside the ``with`` block starts a new
pass, so the maps are those of the **last** UNet call (the last denoising step run inside the block);
enter the block around the one step you want, or use ``stop_early`` / ``run_until_captured``. With
classifier-free guidance the pipeline runs the UNet on ``2B`` latents (unconditional half first), so
the maps come back with batch ``2B``: take ``maps[B:]`` for the text-conditioned half.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

from torch import nn

from .processor import RecordingAttnProcessor
from .recorder import AttentionRecorder, StopForward

__all__ = [
    "STANDARD_PROCESSORS",
    "capture_attention",
    "default_feature_module",
    "layer_grid",
    "run_until_captured",
    "self_attention_layers",
]

Grid = tuple[int, int]
#: diffusers processors whose output the recording processor reproduces (replaced, not wrapped).
STANDARD_PROCESSORS = ("AttnProcessor2_0", "AttnProcessor")
_LEVEL = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.|^mid_block\.")


def self_attention_layers(model: nn.Module) -> dict[str, nn.Module]:
    """All diffusers attention modules of ``model`` that attend to their own tokens, by module name."""
    found = {}
    for name, m in model.named_modules():
        is_attention = hasattr(m, "set_processor") and hasattr(m, "processor")
        if is_attention and not getattr(m, "is_cross_attention", True):
            found[name] = m
    return found


def default_feature_module(unet: nn.Module) -> str:
    """DiffCut's feature block: the last transformer of the deepest down block that has attentions.

    ``down_blocks[-1]`` for SD 1.x/2.x-style UNets whose last down block attends, otherwise (SDXL,
    SSD-1B, and SD 1.x whose last down block is a plain ``DownBlock2D``) the last one that does.
    """
    blocks = getattr(unet, "down_blocks", None)
    if blocks is None:
        raise ValueError(f"unet: expected a UNet2DConditionModel with down_blocks, got {type(unet).__name__}")
    with_attn = [i for i, b in enumerate(blocks) if len(getattr(b, "attentions", None) or []) > 0]
    if not with_attn:
        raise ValueError("unet: expected at least one down block with attentions, got none")
    i = with_attn[-1]
    return f"down_blocks.{i}.attentions.{len(blocks[i].attentions) - 1}"


def _sample_hw(model: nn.Module, sample_size: int | Sequence[int] | None) -> Grid | None:
    if sample_size is None:
        sample_size = getattr(getattr(model, "config", None), "sample_size", None)
        if sample_size is None:
            return None
    if isinstance(sample_size, int):
        sample_size = (sample_size, sample_size)
    if len(sample_size) != 2 or any(int(s) < 1 for s in sample_size):
        raise ValueError(f"sample_size: expected an int or (h, w) of the latents, got {sample_size!r}")
    return int(sample_size[0]), int(sample_size[1])


def layer_grid(name: str, n_levels: int, sample_size: Sequence[int]) -> Grid | None:
    """Token grid ``(h, w)`` of module ``name`` of a UNet with ``n_levels`` down blocks, or ``None``.

    ``sample_size`` is the latent size ``(H, W)`` the UNet runs on.
    """
    m = _LEVEL.match(name)
    if m is None:
        return None
    if m.group(1) == "down_blocks":
        level = int(m.group(2))
    elif m.group(1) == "up_blocks":
        level = n_levels - 1 - int(m.group(2))
    else:
        level = n_levels - 1
    h, w = int(sample_size[0]), int(sample_size[1])
    for _ in range(level):
        h, w = (h + 1) // 2, (w + 1) // 2
    return h, w


def _matches(name: str, patterns: Sequence[str | re.Pattern]) -> bool:
    for p in patterns:
        if isinstance(p, re.Pattern):
            if p.search(name):
                return True
        elif fnmatch.fnmatchcase(name, p):
            return True
    return False


def _resolution_ok(grid: Grid, resolutions: Sequence[int | Sequence[int]]) -> bool:
    for r in resolutions:
        if isinstance(r, int):
            if max(grid) == r:
                return True
        elif tuple(int(x) for x in r) == grid:
            return True
    return False


def _select(
    model: nn.Module,
    layers: str | re.Pattern | Sequence[str | re.Pattern] | None,
    resolutions: Sequence[int | Sequence[int]] | None,
    hw: Grid | None,
) -> dict[str, Grid | None]:
    candidates = self_attention_layers(model)
    if not candidates:
        raise ValueError(
            f"model: expected diffusers self-attention layers, got none in {type(model).__name__}"
        )
    names = list(candidates)
    if layers is not None:
        patterns = [layers] if isinstance(layers, (str, re.Pattern)) else list(layers)
        names = [n for n in names if _matches(n, patterns)]
        if not names:
            raise ValueError(
                f"layers: expected patterns matching self-attention layers, got {layers!r} which match none; "
                f"examples: {list(candidates)[:3]}"
            )
    n_levels = len(getattr(model, "down_blocks", []) or [])
    grids = {n: layer_grid(n, n_levels, hw) if (hw is not None and n_levels) else None for n in names}
    if resolutions is not None:
        if isinstance(resolutions, int):
            resolutions = (resolutions,)
        unknown = [n for n, g in grids.items() if g is None]
        if unknown:
            raise ValueError(
                f"resolutions: expected layers with a known token grid, got {unknown[:3]}; "
                "select them by name or pass sample_size"
            )
        available = sorted({max(g) for g in grids.values()})
        grids = {n: g for n, g in grids.items() if _resolution_ok(g, resolutions)}
        if not grids:
            raise ValueError(
                f"resolutions: expected token resolutions of the selected layers {available} "
                f"(for sample_size {hw}), got {tuple(resolutions)}"
            )
    return grids


@contextmanager
def capture_attention(
    model: nn.Module,
    *,
    layers: str | re.Pattern | Sequence[str | re.Pattern] | None = None,
    resolutions: int | Sequence[int | Sequence[int]] | None = None,
    sample_size: int | Sequence[int] | None = None,
    features: str | None = None,
    per_layer: bool = False,
    chunk_size: int | None = 1024,
    stop_early: bool = False,
    recorder: AttentionRecorder | None = None,
    custom_processors: Literal["wrap", "error"] = "wrap",
) -> Iterator[AttentionRecorder]:
    """Record head-averaged self-attention maps (and optionally one block's output) during forwards.

    Args:
        model: a diffusers model, typically ``UNet2DConditionModel``.
        layers: glob pattern(s) (``"down_blocks.*attn1"``) and/or compiled regexes (``re.search``)
            on module names; ``None`` = every self-attention layer.
        resolutions: keep only layers whose token grid has this many tokens on its longer side (int),
            or exactly this ``(h, w)``; ``None`` = no filter.
        sample_size: latent ``(h, w)`` (or int) the model will run on; default ``model.config.sample_size``.
        features: module name whose output is kept as ``recorder.features`` ``(B, N, C)``
            (e.g. :func:`default_feature_module`); ``None`` = no features.
        per_layer: one map per layer (``recorder.maps``) instead of one mean per grid.
        chunk_size: queries per chunk for the attention probabilities (``None``: no chunking).
        stop_early: end the forward pass (by a private exception, swallowed here and by
            :func:`run_until_captured`) once every chosen layer and the feature module have run.
            The model call must then be the last statement of the ``with`` body.
        recorder: reuse this recorder's buffers (its layer choice is replaced).
        custom_processors: for a recorded layer whose processor is not a diffusers default: ``"wrap"``
            (record, then call that processor for the output) or ``"error"`` (raise ``ValueError``
            naming the layer and the processor).

    Yields:
        The :class:`AttentionRecorder` being filled. Each ``model`` forward starts a new pass (so after a
        sampling loop it holds the last step; with classifier-free guidance its maps have batch 2B).
    """
    if custom_processors not in ("wrap", "error"):
        raise ValueError(f"custom_processors: expected 'wrap' or 'error', got {custom_processors!r}")
    hw = _sample_hw(model, sample_size)
    grids = _select(model, layers, resolutions, hw)
    modules = dict(model.named_modules())
    if features is not None and features not in modules:
        raise ValueError(f"features: expected a module name of {type(model).__name__}, got {features!r}")
    if recorder is None:
        recorder = AttentionRecorder({})
    recorder.configure(
        grids, per_layer=per_layer, chunk_size=chunk_size, feature_module=features, stop_early=stop_early
    )

    originals = {name: modules[name].processor for name in grids}
    custom = {name: proc for name, proc in originals.items() if not _is_standard(proc)}
    if custom and custom_processors == "error":
        name, proc = next(iter(custom.items()))
        raise ValueError(
            f"model: layer {name!r} has a custom attention processor {type(proc).__name__}, which recording "
            f"would replace ({len(custom)} such layer(s)); pass custom_processors='wrap' to record and keep it"
        )
    handles = [model.register_forward_pre_hook(lambda *_: recorder.begin_pass())]
    if features is not None:
        hook = modules[features].register_forward_hook(lambda _m, _i, out: recorder.store_features(out))
        handles.append(hook)
    try:
        for name in grids:
            inner = custom.get(name)
            modules[name].set_processor(RecordingAttnProcessor(recorder, name, inner=inner))
        yield recorder
    except StopForward:
        pass
    finally:
        for h in handles:
            h.remove()
        for name, proc in originals.items():
            modules[name].set_processor(proc)


def _is_standard(processor: object) -> bool:
    cls = type(processor)
    return cls.__name__ in STANDARD_PROCESSORS and cls.__module__.startswith("diffusers.")


def run_until_captured(recorder: AttentionRecorder, model: nn.Module, *args, **kwargs):
    """Call ``model(*args, **kwargs)``; return its output, or ``None`` if it stopped early."""
    try:
        return model(*args, **kwargs)
    except StopForward:
        if not recorder.stop_early:
            raise
        return None
