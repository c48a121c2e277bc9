"""DiffusionBackbone on tiny random-weight UNet / VAE models built from the bundled configs."""

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from diffcut_gpu.attention import (  # noqa: E402
    aggregate_attention,
    default_feature_module,
    layer_grid,
    self_attention_layers,
)
from diffcut_gpu.models.diffusion import DiffusionBackbone, available_configs, load_config  # noqa: E402
from tests.attention.test_capture import _probs_ref  # noqa: E402  (the float64 reference, one copy)

CONFIGS = ["unet_tiny", "unet_tiny_xl"]


def _backbone(config, **kwargs):
    g = torch.Generator().manual_seed(3)
    dim = load_config(config)["cross_attention_dim"]
    emb = torch.randn(1, 8, dim, generator=g)
    pooled = torch.randn(1, 32, generator=g) if config.endswith("xl") else None
    bb = DiffusionBackbone.from_config(config, prompt_embeds=emb, pooled_prompt_embeds=pooled, **kwargs)
    _sharpen(bb.unet)
    return bb


def _sharpen(unet, gain=4.0):
    """Random-weight attention is nearly uniform; larger Q/K weights make the maps peaked, so an error
    in them shows."""
    with torch.no_grad():
        for m in self_attention_layers(unet).values():
            m.to_q.weight.mul_(gain)
            m.to_k.weight.mul_(gain)


@pytest.fixture(scope="module", params=CONFIGS)
def backbone(request):
    return _backbone(request.param)


def _images(batch=2, size=(32, 32), seed=0):
    return torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(seed))


def _reference(bb, images):
    """The pipeline written out by hand: posterior mean, DDPM noising in float64, a full UNet pass with
    the default processors, float64 attention maps from each layer's input, grid means, aggregation."""
    unet, vae = bb.unet, bb.vae
    B, _, H, W = images.shape
    with torch.no_grad():
        lat = vae.encode(images * 2 - 1).latent_dist.mean * vae.config.scaling_factor
        noise = torch.randn((1, *lat.shape[1:]), generator=torch.Generator().manual_seed(bb.seed)).expand_as(
            lat
        )
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
        abar = torch.cumprod(1 - betas, 0)[bb.timestep]
        noisy = (abar.sqrt() * lat.double() + (1 - abar).sqrt() * noise.double()).float()
        modules = dict(unet.named_modules())
        names = [n for n in modules if n.startswith("down_blocks.") and n.endswith("attn1")]
        seen, handles = {}, []
        for n in names:
            hook = lambda m, args, n=n: seen.__setitem__(n, args[0])  # noqa: E731
            handles.append(modules[n].register_forward_pre_hook(hook))
        feat_name = default_feature_module(unet)
        handles.append(
            modules[feat_name].register_forward_hook(lambda m, i, o: seen.__setitem__("feat", o[0]))
        )
        added = None
        if bb.pooled_prompt_embeds is not None:
            ids = torch.tensor([[H, W, 0, 0, H, W]] * B, dtype=torch.float32)
            added = {"text_embeds": bb.pooled_prompt_embeds.expand(B, -1), "time_ids": ids}
        t = torch.full((B,), bb.timestep)
        try:
            unet(noisy, t, encoder_hidden_states=bb.prompt_embeds.expand(B, -1, -1), added_cond_kwargs=added)
        finally:
            for h in handles:
                h.remove()
    per_grid = {}
    for n in names:
        g = layer_grid(n, len(unet.down_blocks), lat.shape[-2:])
        per_grid.setdefault(g, []).append(_probs_ref(modules[n], seen[n]))
    grids = list(per_grid)
    feat = seen["feat"]
    target = tuple(feat.shape[-2:])
    attention = aggregate_attention([torch.stack(per_grid[g]).mean(0) for g in grids], grids, target)
    return attention, feat.flatten(2).transpose(1, 2), target


def test_smoke(backbone):
    out = backbone(_images())
    h, w = out.grid
    assert out.grid == (8, 8)
    assert out.attention.shape == (2, h * w, h * w) and out.attention.dtype == torch.float32
    assert out.features.shape == (2, h * w, 64) and out.features.is_contiguous()
    assert (out.attention >= 0).all() and out.attention.max() > 4.0 / (h * w)  # peaked, not uniform
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, h * w))


def test_matches_ref(backbone):
    images = _images()
    out = backbone(images)
    attention, features, grid = _reference(backbone, images)
    assert out.grid == grid
    torch.testing.assert_close(out.attention.double(), attention, rtol=0, atol=2e-5)
    torch.testing.assert_close(out.features, features, rtol=1e-4, atol=1e-4)


def test_non_square(backbone):
    images = _images(batch=1, size=(48, 32))
    out = backbone(images)
    attention, _, grid = _reference(backbone, images)
    assert out.grid == grid == (12, 8)
    torch.testing.assert_close(out.attention.double(), attention, rtol=0, atol=2e-5)


@pytest.mark.parametrize("config", CONFIGS)
def test_early_exit_matches_full(config):
    images = _images()
    early = _backbone(config, stop_early=True)(images)
    full = _backbone(config, stop_early=False)(images)
    torch.testing.assert_close(early.attention, full.attention, rtol=0, atol=0)
    torch.testing.assert_close(early.features, full.features, rtol=0, atol=0)
    assert early.grid == full.grid


def test_batch_equals_single(backbone):
    images = _images(batch=3)
    full = backbone(images)
    for b in range(3):
        one = backbone(images[b : b + 1])
        torch.testing.assert_close(one.attention[0], full.attention[b], rtol=1e-5, atol=5e-6)
        torch.testing.assert_close(one.features[0], full.features[b], rtol=1e-5, atol=1e-5)


def test_deterministic(backbone):
    images = _images()
    a, b = backbone(images), backbone(images)
    assert torch.equal(a.attention, b.attention) and torch.equal(a.features, b.features)
    assert a.attention.data_ptr() != b.attention.data_ptr()  # results are not views of reused buffers
    seed = backbone.seed
    try:
        backbone.seed = seed + 1
        c = backbone(images)
    finally:
        backbone.seed = seed
    assert not torch.allclose(c.features, a.features)


def test_options():
    bb = _backbone("unet_tiny", resolution_weights={8: 1.0}, target_grid=(16, 16))
    images = _images()
    out = bb(images)
    only8 = _backbone("unet_tiny", resolutions=(8,), target_grid=(16, 16))(images)
    assert out.grid == (16, 16) and out.attention.shape == (2, 256, 256)
    torch.testing.assert_close(out.attention, only8.attention, rtol=0, atol=1e-7)
    torch.testing.assert_close(out.attention.sum(-1), torch.ones(2, 256))
    mixed = _backbone("unet_tiny")(images)
    assert not torch.allclose(mixed.attention, _backbone("unet_tiny", resolutions=(8,))(images).attention)


def test_no_host_copy(backbone, monkeypatch):
    images = _images()

    def forbidden(*args, **kwargs):
        raise AssertionError("device-to-host copy inside the backbone")

    backbone(images)  # warm caches (time ids, scheduler tables)
    with monkeypatch.context() as m:
        for attr in ("item", "cpu", "numpy", "tolist", "__bool__", "__int__", "__float__"):
            m.setattr(torch.Tensor, attr, forbidden)
        out = backbone(images)
    assert out.attention.shape == (2, 64, 64)


def test_processors_restored(backbone):
    before = dict(backbone.unet.attn_processors)
    backbone(_images())
    assert all(backbone.unet.attn_processors[k] is p for k, p in before.items())
    with pytest.raises(ValueError):
        backbone(_images(size=(33, 32)))
    assert all(backbone.unet.attn_processors[k] is p for k, p in before.items())


def test_exception():
    bb = _backbone("unet_tiny")
    with pytest.raises(ValueError, match="images: expected a \\(B, 3, H, W\\)"):
        bb(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="images: expected a float tensor"):
        bb(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="images: expected H and W divisible by 2"):
        bb(torch.rand(1, 3, 31, 32))
    with pytest.raises(ValueError, match="prompt_embeds: expected \\(1, L, 32\\)"):
        DiffusionBackbone(bb.unet, bb.vae, prompt_embeds=torch.zeros(1, 8, 16))
    with pytest.raises(ValueError, match="timestep: expected an int in \\[0, 1000\\)"):
        DiffusionBackbone(bb.unet, bb.vae, prompt_embeds=torch.zeros(1, 8, 32), timestep=1000)
    with pytest.raises(ValueError, match="feature_module: expected a module name"):
        DiffusionBackbone(bb.unet, bb.vae, prompt_embeds=torch.zeros(1, 8, 32), feature_module="nope")
    with pytest.raises(ValueError, match="scheduler: expected an object with add_noise"):
        DiffusionBackbone(bb.unet, bb.vae, object(), prompt_embeds=torch.zeros(1, 8, 32))
    xl = _backbone("unet_tiny_xl")
    with pytest.raises(ValueError, match="pooled_prompt_embeds: expected \\(1, 32\\)"):
        DiffusionBackbone(xl.unet, xl.vae, prompt_embeds=torch.zeros(1, 8, 32))
    with pytest.raises(ValueError, match="config: expected one of"):
        load_config("unet_nope")


def test_configs_match_architectures():
    names = available_configs()
    assert {"unet_sd15", "unet_sd21", "unet_sdxl", "unet_ssd1b", "unet_tiny", "vae_sd", "vae_sdxl"} <= set(
        names
    )
    with torch.device("meta"):  # parameter counts of the public checkpoints, without allocating
        counts = {
            n: sum(p.numel() for p in diffusers.UNet2DConditionModel.from_config(load_config(n)).parameters())
            for n in ("unet_sd15", "unet_sdxl")
        }
    assert counts == {"unet_sd15": 859_520_964, "unet_sdxl": 2_567_463_684}


@pytest.mark.filterwarnings("ignore::UserWarning")  # huggingface_hub deprecation noise
def test_missing_model_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    missing = tmp_path / "no-such-snapshot"
    with pytest.raises(FileNotFoundError) as err:
        DiffusionBackbone.from_pretrained(missing)
    msg = str(err.value)
    assert str(missing) in msg and "--model-path" in msg and "HF_HUB_OFFLINE=1" in msg
    with pytest.raises(OSError) as err:
        DiffusionBackbone.from_pretrained("no-such-org/no-such-model", local_files_only=True)
    assert "no-such-org/no-such-model" in str(err.value) and "--model-path" in str(err.value)


# -- loading a local snapshot (tiny, written to tmp_path) ------------------------------------------------


def _write_tokenizer(path):
    """A byte-level CLIP tokenizer with no merges: enough to encode the empty prompt."""
    transformers = pytest.importorskip("transformers")
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(c) for c in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": 256 + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": 512, "<|endoftext|>": 513})
    path.mkdir(parents=True)
    (path / "vocab.json").write_text(json.dumps(vocab))
    (path / "merges.txt").write_text("#version: 0.2\n")
    tok = transformers.CLIPTokenizer(str(path / "vocab.json"), str(path / "merges.txt"), model_max_length=77)
    tok.save_pretrained(str(path))


def _write_snapshot(root, xl):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    ucfg = load_config("unet_tiny_xl" if xl else "unet_tiny")
    diffusers.UNet2DConditionModel.from_config(ucfg).save_pretrained(root / "unet")
    diffusers.AutoencoderKL.from_config(load_config("vae_tiny")).save_pretrained(root / "vae")
    diffusers.EulerDiscreteScheduler(
        beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
    ).save_pretrained(root / "scheduler")
    common = dict(intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, vocab_size=514)
    common.update(max_position_embeddings=77, bos_token_id=512, eos_token_id=513, pad_token_id=513)
    encoders = {}
    if xl:
        cfg1 = transformers.CLIPTextConfig(hidden_size=16, **common)
        cfg2 = transformers.CLIPTextConfig(hidden_size=16, projection_dim=32, **common)
        encoders["text_encoder"] = transformers.CLIPTextModel(cfg1)
        encoders["text_encoder_2"] = transformers.CLIPTextModelWithProjection(cfg2)
    else:
        encoders["text_encoder"] = transformers.CLIPTextModel(
            transformers.CLIPTextConfig(hidden_size=32, **common)
        )
    for sub, enc in encoders.items():
        enc.save_pretrained(root / sub)
        _write_tokenizer(root / sub.replace("text_encoder", "tokenizer"))
    return encoders


@pytest.mark.parametrize("xl", [False, True])
def test_from_pretrained_local_snapshot(tmp_path, xl):
    encoders = _write_snapshot(tmp_path, xl)
    bb = DiffusionBackbone.from_pretrained(tmp_path, device="cpu", local_files_only=True)
    ids = torch.tensor([[512] + [513] * 76])  # "" -> <start> <end> and padding with <end>
    with torch.no_grad():
        if xl:
            h1 = encoders["text_encoder"](ids, output_hidden_states=True).hidden_states[-2]
            out2 = encoders["text_encoder_2"](ids, output_hidden_states=True)
            ref, pooled = torch.cat([h1, out2.hidden_states[-2]], -1), out2.text_embeds
            torch.testing.assert_close(bb.pooled_prompt_embeds, pooled)
        else:
            ref = encoders["text_encoder"](ids).last_hidden_state
            assert bb.pooled_prompt_embeds is None
    torch.testing.assert_close(bb.prompt_embeds, ref)
    assert (
        type(bb.scheduler).__name__ == "DDPMScheduler"
    )  # the VP noising formula, whatever the pipeline ships
    out = bb(_images())
    assert out.attention.shape == (2, 64, 64) and out.grid == (8, 8)


def test_snapshot_without_text_encoder_says_prompt_embeds(tmp_path):
    import shutil

    _write_snapshot(tmp_path, xl=False)
    shutil.rmtree(tmp_path / "text_encoder")
    shutil.rmtree(tmp_path / "tokenizer")
    with pytest.raises(OSError) as err:
        DiffusionBackbone.from_pretrained(tmp_path, device="cpu", local_files_only=True)
    msg = str(err.value)
    assert "prompt_embeds" in msg and "text_encoder/" in msg and str(tmp_path) in msg
    assert "download" not in msg  # a local folder is never to be downloaded
    cross = load_config("unet_tiny")["cross_attention_dim"]
    bb = DiffusionBackbone.from_pretrained(tmp_path, device="cpu", local_files_only=True,
                                           prompt_embeds=torch.zeros(1, 77, cross))
    assert bb(_images()).attention.shape == (2, 64, 64)


@pytest.mark.filterwarnings("ignore::UserWarning")  # huggingface_hub deprecation noise
def test_local_folder_errors_never_suggest_downloading_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError) as err:
        DiffusionBackbone.from_pretrained(tmp_path / "gone")
    assert "download" not in str(err.value) and "does not exist" in str(err.value)
    (tmp_path / "unet").mkdir()  # a folder, but not a snapshot
    with pytest.raises(OSError) as err:
        DiffusionBackbone.from_pretrained(tmp_path)
    msg = str(err.value)
    assert "download" not in msg and "model_index.json, unet/" in msg and f"--model-path {tmp_path}" in msg
    with pytest.raises(OSError, match="huggingface-cli download no-such-org/x"):  # a hub name: yes
        DiffusionBackbone.from_pretrained("no-such-org/x", local_files_only=True)


def test_vit_folder_points_to_the_vit_backbone(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, patch_size=14, image_size=28)
    transformers.Dinov2Model(config).save_pretrained(tmp_path)
    with pytest.raises(OSError, match="backbone='vit'") as err:
        DiffusionBackbone.from_pretrained(tmp_path)
    assert "dinov2" in str(err.value) and "download" not in str(err.value)


def test_size_multiple(backbone):
    # vae_tiny halves once per extra block; the UNet strides by 2 per extra down block
    vae = 2 ** (len(backbone.vae.config.block_out_channels) - 1)
    unet = 2 ** (len(backbone.unet.config.down_block_types) - 1)
    assert backbone.size_multiple == vae * unet
