"""Stable Diffusion backbone: images -> self-attention transition matrix and block features.

One UNet pass per batch, as in DiffCut: image ``(B, 3, H, W)`` in ``[0, 1]`` -> VAE posterior
*mean* latents (times ``vae.config.scaling_factor``) -> forward-diffused to timestep ``t`` with a
seeded noise draw -> UNet with the empty-prompt embedding (computed once, cached) -> the pass ends as
soon as the chosen self-attention layers and the feature block have run. The recorded head-averaged
attention maps of every token grid are resampled to the feature block's grid and averaged.

    >>> bb = DiffusionBackbone.from_pretrained("segmind/SSD-1B", device="cuda")  # doctest: +SKIP
    >>> out = bb(images)            # out.attention (B, N, N), out.features (B, N, C), out.grid (h, w)

Random-weight models for tests and benchmarks come from the bundled configs:
``DiffusionBackbone.from_config("unet_ssd1b")`` (see :func:`available_configs`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from ..attention import aggregate_attention, capture_attention, default_feature_module, run_until_captured
from ..attention.recorder import AttentionRecorder
from ._loading import first_line, model_source, offline_hint, transformers_checkpoint, transformers_dtype
from .output import BackboneOutput

__all__ = ["DiffusionBackbone", "available_configs", "load_config"]

_CONFIG_DIR = Path(__file__).resolve().parent / "configs"
_INSTALL_HINT = "pip install diffcut-gpu[diffusers]"


def _import_diffusers():
    try:
        import diffusers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"DiffusionBackbone needs diffusers: {_INSTALL_HINT}") from err
    return diffusers


def _import_transformers():
    try:
        import transformers
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"encoding the empty prompt needs transformers: {_INSTALL_HINT}") from err
    return transformers


def available_configs() -> list[str]:
    """Names of the bundled configs (``unet_sd15``, ``unet_sdxl``, ``unet_ssd1b``, ``vae_sd`` ...)."""
    return sorted(p.stem for p in _CONFIG_DIR.glob("*.json"))


def load_config(config: str | os.PathLike | Mapping) -> dict:
    """A diffusers config dict from a bundled name (``"unet_ssd1b"``), a JSON file path, or a mapping."""
    if isinstance(config, Mapping):
        return dict(config)
    path = Path(config)
    if not path.suffix and (_CONFIG_DIR / f"{config}.json").is_file():
        path = _CONFIG_DIR / f"{config}.json"
    if not path.is_file():
        raise ValueError(f"config: expected one of {available_configs()} or a JSON file path, got {config!r}")
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _is_xl(unet: nn.Module) -> bool:
    """SDXL-family UNets (SDXL, SSD-1B) take pooled text embeddings and size ids as extra conditioning."""
    return getattr(unet.config, "addition_embed_type", None) == "text_time"


def _cross_dim(unet: nn.Module) -> int:
    dim = unet.config.cross_attention_dim
    return int(dim[0] if isinstance(dim, (list, tuple)) else dim)


def _pooled_dim(unet: nn.Module) -> int:
    return int(unet.config.projection_class_embeddings_input_dim - 6 * unet.config.addition_time_embed_dim)


def _vae_factor(vae: nn.Module) -> int:
    return 2 ** (len(vae.config.block_out_channels) - 1)


class DiffusionBackbone(nn.Module):
    """UNet self-attention and block features of a Stable Diffusion model, for one noisy pass.

    Args:
        unet: a diffusers ``UNet2DConditionModel`` (SD 1.x/2.x, SDXL, SSD-1B ...).
        vae: the matching ``AutoencoderKL``.
        scheduler: anything with ``add_noise(latents, noise, t)``; default a ``DDPMScheduler`` with the
            Stable Diffusion betas (scaled linear, 0.00085 to 0.012, 1000 steps).
        prompt_embeds: ``(1, L, D)`` (or ``(L, D)``) text embedding, ``D = cross_attention_dim``; usually
            the encoded empty prompt (``from_pretrained`` computes it).
        pooled_prompt_embeds: ``(1, P)`` pooled embedding, SDXL-family only.
        timestep: diffusion timestep ``t`` of the single pass (DiffCut: small ``t`` keeps the image).
        seed: seed of the noise; every image of a batch gets the same draw, so results do not depend on
            how images are batched.
        layers: glob(s)/regex(es) of the self-attention layers to record (see ``capture_attention``);
            default every self-attention layer of the down blocks.
        resolutions: keep only layers with these tokens per side (``None``: all selected layers).
        resolution_weights: weight of each token grid in the average, keyed by tokens on its longer
            side (missing grids get weight 0); ``None`` = equal weights.
        feature_module: module whose output gives ``features``; default :func:`default_feature_module`.
        target_grid: grid of the returned attention; default the feature block's grid.
        chunk_size: queries per chunk when computing attention probabilities.
        stop_early: end the UNet pass once everything is captured (same result, less work).

    Returns (``forward``):
        ``BackboneOutput`` with ``attention (B, N, N)`` float32 row-stochastic, ``features (B, N, C)``
        in the UNet dtype, ``grid (h, w)``.
    """

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        scheduler=None,
        *,
        prompt_embeds: Tensor,
        pooled_prompt_embeds: Tensor | None = None,
        timestep: int = 50,
        seed: int = 0,
        layers: str | re.Pattern | Sequence[str | re.Pattern] | None = "down_blocks.*",
        resolutions: Sequence[int] | None = None,
        resolution_weights: Mapping[int, float] | None = None,
        feature_module: str | None = None,
        target_grid: tuple[int, int] | None = None,
        chunk_size: int | None = 1024,
        stop_early: bool = True,
    ) -> None:
        super().__init__()
        self.unet = unet.eval().requires_grad_(False)
        self.vae = vae.eval().requires_grad_(False)
        if scheduler is None:
            scheduler = _import_diffusers().DDPMScheduler(
                num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
            )
        if not callable(getattr(scheduler, "add_noise", None)):
            got = type(scheduler).__name__
            raise ValueError(f"scheduler: expected an object with add_noise(latents, noise, t), got {got}")
        self.scheduler = scheduler
        n_train = int(getattr(getattr(scheduler, "config", None), "num_train_timesteps", 1000))
        if not isinstance(timestep, int) or not 0 <= timestep < n_train:
            raise ValueError(f"timestep: expected an int in [0, {n_train}), got {timestep!r}")
        if not isinstance(seed, int):
            raise ValueError(f"seed: expected an int, got {seed!r}")
        self.timestep, self.seed = timestep, seed

        emb, cross = prompt_embeds, _cross_dim(unet)
        if isinstance(emb, Tensor) and emb.ndim == 2:
            emb = emb.unsqueeze(0)
        if not isinstance(emb, Tensor) or emb.ndim != 3 or emb.shape[0] != 1 or emb.shape[2] != cross:
            got = tuple(emb.shape) if isinstance(emb, Tensor) else type(emb).__name__
            raise ValueError(f"prompt_embeds: expected (1, L, {_cross_dim(unet)}) for this UNet, got {got}")
        self.register_buffer("prompt_embeds", emb.detach().to(unet.dtype), persistent=False)
        if _is_xl(unet):
            pooled = pooled_prompt_embeds
            if pooled is None:
                raise ValueError(
                    f"pooled_prompt_embeds: expected (1, {_pooled_dim(unet)}) for an SDXL-type UNet, got None"
                )
            pooled = pooled.unsqueeze(0) if isinstance(pooled, Tensor) and pooled.ndim == 1 else pooled
            if not isinstance(pooled, Tensor) or pooled.shape != (1, _pooled_dim(unet)):
                got = tuple(pooled.shape) if isinstance(pooled, Tensor) else type(pooled).__name__
                raise ValueError(f"pooled_prompt_embeds: expected (1, {_pooled_dim(unet)}), got {got}")
            self.register_buffer("pooled_prompt_embeds", pooled.detach().to(unet.dtype), persistent=False)
        else:
            self.pooled_prompt_embeds = None

        self.layers, self.resolutions = layers, resolutions
        self.resolution_weights = dict(resolution_weights) if resolution_weights is not None else None
        self.feature_module = feature_module or default_feature_module(unet)
        if self.feature_module not in dict(unet.named_modules()):
            raise ValueError(f"feature_module: expected a module name of the UNet, got {feature_module!r}")
        if target_grid is not None and (len(target_grid) != 2 or min(target_grid) < 1):
            raise ValueError(f"target_grid: expected (h, w) positive ints, got {target_grid!r}")
        self.target_grid = tuple(target_grid) if target_grid is not None else None
        self.chunk_size, self.stop_early = chunk_size, stop_early
        self._recorder = AttentionRecorder({}, chunk_size=chunk_size)
        self._time_ids: dict[tuple, Tensor] = {}  # (H, W, device, dtype) -> (1, 6) size ids

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_config(
        cls,
        unet_config: str | os.PathLike | Mapping = "unet_ssd1b",
        vae_config: str | os.PathLike | Mapping | None = None,
        *,
        torch_dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        init_seed: int = 0,
        prompt_embeds: Tensor | None = None,
        pooled_prompt_embeds: Tensor | None = None,
        **kwargs,
    ) -> DiffusionBackbone:
        """Random-weight backbone from UNet / VAE configs (tests, benchmarks).

        ``vae_config=None`` picks the matching bundled VAE (``vae_tiny`` for ``unet_tiny*``, ``vae_sdxl``
        for SDXL-type UNets, ``vae_sd`` otherwise). Weights are drawn under ``torch.manual_seed(init_seed)``
        without touching the global RNG. Missing prompt embeddings are zeros (length 77). ``kwargs`` go
        to the constructor.
        """
        diffusers = _import_diffusers()
        ucfg = load_config(unet_config)
        if vae_config is None:
            tiny = isinstance(unet_config, str) and Path(unet_config).stem.startswith("unet_tiny")
            xl = ucfg.get("addition_embed_type") == "text_time"
            vae_config = "vae_tiny" if tiny else ("vae_sdxl" if xl else "vae_sd")
        vcfg = load_config(vae_config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            unet = diffusers.UNet2DConditionModel.from_config(ucfg)
            vae = diffusers.AutoencoderKL.from_config(vcfg)
        unet, vae = unet.to(device), vae.to(device)
        if torch_dtype != torch.float32:
            unet, vae = unet.to(torch_dtype), vae.to(torch_dtype)
        if prompt_embeds is None:
            prompt_embeds = torch.zeros(1, 77, _cross_dim(unet), device=device, dtype=torch_dtype)
        if pooled_prompt_embeds is None and _is_xl(unet):
            pooled_prompt_embeds = torch.zeros(1, _pooled_dim(unet), device=device, dtype=torch_dtype)
        return cls(
            unet, vae, prompt_embeds=prompt_embeds, pooled_prompt_embeds=pooled_prompt_embeds, **kwargs
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = "segmind/SSD-1B",
        *,
        torch_dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
        variant: str | None = None,
        local_files_only: bool | None = None,
        prompt_embeds: Tensor | None = None,
        pooled_prompt_embeds: Tensor | None = None,
        **kwargs,
    ) -> DiffusionBackbone:
        """Load UNet, VAE and scheduler of a diffusers pipeline (hub name or local snapshot folder).

        ``torch_dtype=None``: float16 on CUDA, float32 otherwise (a VAE with ``force_upcast``, like
        SDXL's, stays float32). The empty prompt is encoded once with the pipeline's text encoder(s),
        which are then dropped, unless ``prompt_embeds`` (and for SDXL ``pooled_prompt_embeds``) are
        given. ``kwargs`` go to the constructor. A model that cannot be loaded (offline, missing
        folder) raises ``OSError`` saying how to point at a local snapshot; a folder without text
        encoder or tokenizer says that ``prompt_embeds`` can be passed instead; a transformers (ViT)
        folder says to use ``backbone="vit"``.
        """
        diffusers = _import_diffusers()
        source = model_source(name_or_path, holds=_HOLDS)
        name, src = source.name, source.path
        kind = transformers_checkpoint(src) if source.local else None
        if kind is not None:
            raise OSError(
                f"name_or_path: expected a diffusers pipeline snapshot, got '{name}', a transformers "
                f"checkpoint (model_type '{kind}'); load it as a ViT: --backbone vit on the command line, "
                "DiffCut.from_pretrained(path, backbone='vit') or ViTBackbone.from_pretrained(path) in Python"
            )
        device = (
            torch.device(device)
            if device is not None
            else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        )
        dtype = torch_dtype or (torch.float16 if device.type == "cuda" else torch.float32)
        local = {} if local_files_only is None else {"local_files_only": local_files_only}
        weights = {"variant": variant, **local}
        try:
            unet = diffusers.UNet2DConditionModel.from_pretrained(
                src, subfolder="unet", torch_dtype=dtype, **weights
            )
            vae_cfg = diffusers.AutoencoderKL.load_config(src, subfolder="vae", **local)
            vae_dtype = torch.float32 if vae_cfg.get("force_upcast", False) else dtype
            vae = diffusers.AutoencoderKL.from_pretrained(
                src, subfolder="vae", torch_dtype=vae_dtype, **weights
            )
            scheduler = diffusers.DDPMScheduler.from_pretrained(src, subfolder="scheduler", **local)
        except (OSError, ValueError) as err:
            raise OSError(_load_hint(source, first_line(err))) from None
        if prompt_embeds is None:
            try:
                prompt_embeds, pooled = _encode_empty_prompt(
                    src, xl=_is_xl(unet), device=device, dtype=dtype, local=local
                )
            except (OSError, ValueError) as err:
                raise OSError(_prompt_hint(source, first_line(err), xl=_is_xl(unet))) from None
            pooled_prompt_embeds = pooled if pooled_prompt_embeds is None else pooled_prompt_embeds
        backbone = cls(
            unet,
            vae,
            scheduler,
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            **kwargs,
        )
        return backbone.to(device)

    @property
    def size_multiple(self) -> int:
        """Image sides should be multiples of this: the VAE downsampling times the UNet's total stride
        (the VAE factor alone is required; the stride keeps every UNet level's grid exact)."""
        return _vae_factor(self.vae) * 2 ** (len(self.unet.config.down_block_types) - 1)

    # -- forward ----------------------------------------------------------------------------------
    def _check_images(self, images: Tensor) -> None:
        f = _vae_factor(self.vae)
        if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
            got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images: expected a (B, 3, H, W) tensor with values in [0, 1], got {got}")
        if not images.is_floating_point():
            raise ValueError(f"images: expected a float tensor with values in [0, 1], got {images.dtype}")
        if images.shape[0] == 0:
            raise ValueError(f"images: expected a non-empty batch, got shape {tuple(images.shape)}")
        if images.shape[2] % f or images.shape[3] % f:
            raise ValueError(
                f"images: expected H and W divisible by {f} (the VAE downsampling), got "
                f"{images.shape[2]}x{images.shape[3]}; resize or pad the images first"
            )

    def encode(self, images: Tensor) -> Tensor:
        """VAE posterior mean of ``images`` ``(B, 3, H, W)`` in ``[0, 1]``, scaled: ``(B, 4, H/f, W/f)``."""
        self._check_images(images)
        vae = self.vae
        x = images.to(device=self.prompt_embeds.device, dtype=vae.dtype) * 2 - 1
        mean = vae.encode(x).latent_dist.mean
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((mean - shift) * vae.config.scaling_factor).to(self.unet.dtype)

    def _added_cond(self, batch: int, size: tuple[int, int]) -> dict | None:
        """SDXL micro-conditioning: pooled text embedding and (original, crop, target) size ids."""
        if self.pooled_prompt_embeds is None:
            return None
        device, dtype = self.prompt_embeds.device, self.unet.dtype
        key = (*size, device, dtype)
        ids = self._time_ids.get(key)
        if ids is None:  # one small host-to-device copy per image size
            h, w = size
            ids = torch.tensor([[h, w, 0, 0, h, w]], dtype=dtype, device=device)
            self._time_ids[key] = ids
        return {"text_embeds": self.pooled_prompt_embeds.expand(batch, -1), "time_ids": ids.expand(batch, -1)}

    def _weights(self, grids: list[tuple[int, int]]) -> list[float] | None:
        if self.resolution_weights is None:
            return None
        return [float(self.resolution_weights.get(max(g), 0.0)) for g in grids]

    @torch.no_grad()
    def forward(self, images: Tensor) -> BackboneOutput:
        """``images`` ``(B, 3, H, W)`` in ``[0, 1]`` -> ``BackboneOutput(attention, features, grid)``."""
        latents = self.encode(images)
        B, C, h, w = latents.shape
        gen = torch.Generator(device=latents.device).manual_seed(self.seed)
        noise = torch.randn((1, C, h, w), generator=gen, device=latents.device, dtype=torch.float32)
        t = torch.full((B,), self.timestep, device=latents.device, dtype=torch.long)
        noisy = self.scheduler.add_noise(latents, noise.to(latents.dtype).expand(B, -1, -1, -1), t)
        added = self._added_cond(B, (images.shape[2], images.shape[3]))
        with capture_attention(
            self.unet,
            layers=self.layers,
            resolutions=self.resolutions,
            sample_size=(h, w),
            features=self.feature_module,
            chunk_size=self.chunk_size,
            stop_early=self.stop_early,
            recorder=self._recorder,
        ) as rec:
            run_until_captured(
                rec,
                self.unet,
                noisy,
                t,
                encoder_hidden_states=self.prompt_embeds.expand(B, -1, -1),
                added_cond_kwargs=added,
                return_dict=False,
            )
        maps = rec.grid_maps()
        grids = list(maps)
        grid = self.target_grid or rec.feature_grid
        attention = aggregate_attention([maps[g] for g in grids], grids, grid, self._weights(grids))
        features = rec.features.contiguous()
        rec.features = None  # do not keep the UNet activation alive between calls
        return BackboneOutput(attention=attention, features=features, grid=grid)


_HOLDS = "a diffusers pipeline snapshot (model_index.json, unet/, vae/, scheduler/, text_encoder/, tokenizer/)"


def _load_hint(source, reason: str) -> str:
    return (
        f"name_or_path: could not load diffusion model '{source.name}' ({reason}). "
        + offline_hint(source, holds=_HOLDS, python="DiffusionBackbone.from_pretrained('PATH')")
    )


def _prompt_hint(source, reason: str, *, xl: bool) -> str:
    """No text encoder or tokenizer: they only encode the empty prompt, which can be passed instead."""
    parts = "text_encoder/, tokenizer/" + (", text_encoder_2/, tokenizer_2/" if xl else "")
    pooled = " and pooled_prompt_embeds=(1, P)" if xl else ""
    where = (
        f"the folder '{source.name}' needs {parts}"
        if source.local
        else f"the snapshot of '{source.name}' needs {parts} (see --model-path for offline use)"
    )
    return (
        f"name_or_path: could not load the text encoder or tokenizer of '{source.name}' to encode the empty "
        f"prompt ({reason}); {where}. They are used for nothing else: pass the encoded empty prompt instead, "
        f"DiffusionBackbone.from_pretrained(path, prompt_embeds=(1, L, D) tensor{pooled}) "
        "(DiffCut.from_pretrained(path, backbone_kwargs={'prompt_embeds': ...}))."
    )


def _encode_empty_prompt(
    src: str, *, xl: bool, device: torch.device, dtype: torch.dtype, local: dict
) -> tuple[Tensor, Tensor | None]:
    """Encode ``""`` once with the pipeline's text encoder(s): ``(1, L, D)`` and, for SDXL, ``(1, P)``.

    SD 1.x/2.x: last hidden state of ``text_encoder``. SDXL family: penultimate hidden states of
    ``text_encoder`` and ``text_encoder_2`` concatenated, plus ``text_encoder_2``'s projected pooled output.
    """
    transformers = _import_transformers()
    dtype_kw = transformers_dtype(transformers, dtype)

    def run(tok_dir: str, enc_dir: str, cls, penultimate: bool):
        tok = transformers.CLIPTokenizer.from_pretrained(src, subfolder=tok_dir, **local)
        enc = cls.from_pretrained(src, subfolder=enc_dir, **dtype_kw, **local).to(device).eval()
        ids = tok(
            "", padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids.to(device)
        with torch.no_grad():
            out = enc(ids, output_hidden_states=penultimate)
        hidden = out.hidden_states[-2] if penultimate else out.last_hidden_state
        pooled = getattr(out, "text_embeds", None)
        return hidden.detach(), (pooled.detach() if pooled is not None else None)

    if not xl:
        hidden, _ = run("tokenizer", "text_encoder", transformers.CLIPTextModel, penultimate=False)
        return hidden.to(dtype), None
    h1, _ = run("tokenizer", "text_encoder", transformers.CLIPTextModel, penultimate=True)
    with_proj = transformers.CLIPTextModelWithProjection
    h2, pooled = run("tokenizer_2", "text_encoder_2", with_proj, penultimate=True)
    return torch.cat([h1, h2], dim=-1).to(dtype), pooled.to(dtype)
