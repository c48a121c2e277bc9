"""Recording processor, recorder and capture context on a tiny random-weight diffusers UNet."""

import re

import pytest
import torch
import torch.nn.functional as F

from diffcut_gpu.attention import (
    AttentionRecorder,
    RecordingAttnProcessor,
    capture_attention,
    default_feature_module,
    head_mean_attention,
    head_mean_attention_ref,
    layer_grid,
    run_until_captured,
    self_attention_layers,
)

diffusers = pytest.importorskip("diffusers")


def _tiny_unet(config="unet_tiny", seed=0):
    from diffcut_gpu.models.diffusion import load_config

    torch.manual_seed(seed)
    unet = diffusers.UNet2DConditionModel.from_config(load_config(config)).eval()
    with torch.no_grad():  # random-weight attention is nearly uniform; larger Q/K make it peaked
        for m in self_attention_layers(unet).values():
            m.to_q.weight.mul_(4.0)
            m.to_k.weight.mul_(4.0)
    return unet


@pytest.fixture(scope="module")
def unet():
    return _tiny_unet()


def _inputs(unet, batch=2, size=(16, 16), seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, *size, generator=g)
    emb = torch.randn(batch, 8, unet.config.cross_attention_dim, generator=g)
    return x, torch.full((batch,), 50), emb


def _attn_inputs(unet, names):
    """Forward pre-hooks keeping each attention layer's input hidden states."""
    seen, handles = {}, []
    modules = dict(unet.named_modules())
    for n in names:
        hook = lambda m, args, kwargs, n=n: seen.__setitem__(n, args[0] if args else kwargs["hidden_states"])  # noqa: E731
        handles.append(modules[n].register_forward_pre_hook(hook, with_kwargs=True))
    return seen, handles


def _probs_ref(attn, hidden):
    """float64 head mean of softmax(Q K^T * scale) from the layer's own weights."""
    h = hidden.double()
    q = F.linear(h, attn.to_q.weight.double(), None if attn.to_q.bias is None else attn.to_q.bias.double())
    k = F.linear(h, attn.to_k.weight.double(), None if attn.to_k.bias is None else attn.to_k.bias.double())
    B, N, C = q.shape
    q = q.view(B, N, attn.heads, C // attn.heads).transpose(1, 2)
    k = k.view(B, N, attn.heads, C // attn.heads).transpose(1, 2)
    return torch.softmax(q @ k.transpose(-1, -2) * attn.scale, dim=-1).mean(1)


# -- the probability op -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 1, 5, 16, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_head_mean_attention_matches_ref(chunk_size, dtype):
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, 3, 37, 8, generator=g).to(dtype)
    k = torch.randn(2, 3, 29, 8, generator=g).to(dtype)
    out = head_mean_attention(q, k, scale=8**-0.5, chunk_size=chunk_size)
    assert out.shape == (2, 37, 29) and out.dtype == torch.promote_types(dtype, torch.float32)
    ref = head_mean_attention_ref(q, k, scale=8**-0.5)
    tol = 1e-12 if dtype == torch.float64 else 1e-6
    torch.testing.assert_close(out.double(), ref, rtol=0, atol=tol)


@pytest.mark.parametrize("kind", ["bool", "additive", "row"])
def test_head_mean_attention_mask_matches_ref(kind):
    g = torch.Generator().manual_seed(8)
    q, k = torch.randn(2, 2, 12, 4, generator=g), torch.randn(2, 2, 12, 4, generator=g)
    if kind == "bool":
        mask = torch.rand(2, 1, 12, 12, generator=g) > 0.3
        mask[..., 0] = True  # every row keeps one key
    elif kind == "additive":
        mask = torch.randn(2, 2, 12, 12, generator=g)
    else:
        mask = torch.randn(2, 1, 1, 12, generator=g)
    out = head_mean_attention(q, k, scale=0.5, chunk_size=5, attn_mask=mask)
    torch.testing.assert_close(
        out.double(), head_mean_attention_ref(q, k, scale=0.5, attn_mask=mask), rtol=0, atol=1e-6
    )


def test_head_mean_attention_accumulates_into_buffer():
    g = torch.Generator().manual_seed(9)
    q1, k1, q2, k2 = (torch.randn(1, 2, 10, 4, generator=g) for _ in range(4))
    buf = torch.empty(1, 10, 10)
    out = head_mean_attention(q1, k1, scale=0.5, out=buf, weight=0.25, chunk_size=3)
    assert out is buf
    head_mean_attention(q2, k2, scale=0.5, out=buf, accumulate=True, weight=0.75, chunk_size=4)
    ref = 0.25 * head_mean_attention_ref(q1, k1, scale=0.5) + 0.75 * head_mean_attention_ref(
        q2, k2, scale=0.5
    )
    torch.testing.assert_close(buf.double(), ref, rtol=0, atol=1e-6)


def test_head_mean_attention_exception():
    q = torch.randn(1, 2, 4, 8)
    with pytest.raises(ValueError, match="query: expected a \\(B, heads, N, d\\)"):
        head_mean_attention(q[0], q, scale=1.0)
    with pytest.raises(ValueError, match="key: expected"):
        head_mean_attention(q, torch.randn(1, 3, 4, 8), scale=1.0)
    with pytest.raises(ValueError, match="chunk_size: expected a positive int"):
        head_mean_attention(q, q, scale=1.0, chunk_size=0)
    with pytest.raises(ValueError, match="out: expected a buffer"):
        head_mean_attention(q, q, scale=1.0, accumulate=True)
    with pytest.raises(ValueError, match="out: expected a floating point \\(1, 4, 4\\)"):
        head_mean_attention(q, q, scale=1.0, out=torch.empty(1, 4, 5))


# -- capture on a UNet ------------------------------------------------------------------------------


def test_smoke(unet):
    x, t, emb = _inputs(unet)
    with capture_attention(unet, per_layer=True) as rec:
        unet(x, t, encoder_hidden_states=emb)
    names = list(self_attention_layers(unet))
    assert set(rec.maps) == set(names) and all(n.endswith("attn1") for n in names)
    assert rec.grids["down_blocks.0.attentions.0.transformer_blocks.0.attn1"] == (16, 16)
    assert rec.grids["mid_block.attentions.0.transformer_blocks.0.attn1"] == (8, 8)
    assert rec.grids["up_blocks.1.attentions.1.transformer_blocks.0.attn1"] == (16, 16)
    for m in rec.maps.values():
        torch.testing.assert_close(m.sum(-1), torch.ones(m.shape[:2]))


def test_matches_ref(unet):
    x, t, emb = _inputs(unet)
    names = list(self_attention_layers(unet))
    modules = dict(unet.named_modules())
    seen, handles = _attn_inputs(unet, names)
    try:
        with capture_attention(unet, per_layer=True, chunk_size=37) as rec:
            unet(x, t, encoder_hidden_states=emb)
    finally:
        for h in handles:
            h.remove()
    for n in names:
        ref = _probs_ref(modules[n], seen[n])
        torch.testing.assert_close(rec.maps[n].double(), ref, rtol=0, atol=2e-6)


def test_outputs_unchanged(unet):
    x, t, emb = _inputs(unet)
    base = unet(x, t, encoder_hidden_states=emb).sample
    with capture_attention(unet, chunk_size=7):
        out = unet(x, t, encoder_hidden_states=emb).sample
    torch.testing.assert_close(out, base, rtol=0, atol=0)


def test_chunked_equals_unchunked(unet):
    x, t, emb = _inputs(unet)
    results = []
    for chunk in (None, 1, 50, 4096):
        with capture_attention(unet, per_layer=True, chunk_size=chunk) as rec:
            unet(x, t, encoder_hidden_states=emb)
        results.append({n: m.clone() for n, m in rec.maps.items()})
    for other in results[1:]:
        for n, m in results[0].items():
            torch.testing.assert_close(other[n], m, rtol=1e-5, atol=2e-6)


def test_grid_mean_equals_layer_mean(unet):
    x, t, emb = _inputs(unet)
    with capture_attention(unet, per_layer=True) as rec:
        unet(x, t, encoder_hidden_states=emb)
    ref = {}
    for n, m in rec.maps.items():
        ref.setdefault(rec.grids[n], []).append(m.double())
    with capture_attention(unet) as rec2:
        unet(x, t, encoder_hidden_states=emb)
    got = rec2.grid_maps()
    assert set(got) == set(ref) == {(16, 16), (8, 8)}
    for g, ms in ref.items():
        torch.testing.assert_close(got[g].double(), torch.stack(ms).mean(0), rtol=0, atol=1e-6)
    # A second pass overwrites instead of accumulating.
    with capture_attention(unet, recorder=rec2) as rec3:
        unet(x, t, encoder_hidden_states=emb)
        unet(x, t, encoder_hidden_states=emb)
    assert rec3 is rec2
    for g, ms in ref.items():
        torch.testing.assert_close(rec3.grid_maps()[g].double(), torch.stack(ms).mean(0), rtol=0, atol=1e-6)


def test_batch_equals_single(unet):
    x, t, emb = _inputs(unet, batch=3)
    with capture_attention(unet) as rec:
        unet(x, t, encoder_hidden_states=emb)
        full = {g: m.clone() for g, m in rec.grid_maps().items()}
    for b in range(3):
        with capture_attention(unet) as rec:
            unet(x[b : b + 1], t[b : b + 1], encoder_hidden_states=emb[b : b + 1])
        for g, m in rec.grid_maps().items():
            torch.testing.assert_close(m[0], full[g][b], rtol=1e-5, atol=5e-6)


def test_select_by_name_and_resolution(unet):
    all_names = list(self_attention_layers(unet))
    with capture_attention(unet, layers="down_blocks.*", per_layer=True) as rec:
        pass
    assert list(rec.layers) == [n for n in all_names if n.startswith("down_blocks.")]
    with capture_attention(unet, layers=re.compile(r"^up_blocks\.1\."), per_layer=True) as rec:
        pass
    assert list(rec.layers) == [n for n in all_names if n.startswith("up_blocks.1.")]
    with capture_attention(unet, resolutions=(8,), sample_size=16) as rec:
        pass
    assert set(rec.layers) == {
        n for n in all_names if n.startswith(("down_blocks.1", "mid_block", "up_blocks.0"))
    }
    with capture_attention(
        unet, resolutions=[(16, 16)], layers=["down_*", "mid_*"], sample_size=(16, 16)
    ) as rec:
        pass
    assert list(rec.layers) == ["down_blocks.0.attentions.0.transformer_blocks.0.attn1"]


@pytest.mark.parametrize("size", [(16, 16), (12, 20), (13, 9)])
def test_layer_grid_matches_run(unet, size):
    # The runtime token count is checked against layer_grid; a wrong grid raises inside the forward.
    x, t, emb = _inputs(unet, batch=1, size=size)
    with capture_attention(unet, per_layer=True, sample_size=size) as rec:
        unet(x, t, encoder_hidden_states=emb)
    n_levels = len(unet.down_blocks)
    for n, g in rec.grids.items():
        assert g == layer_grid(n, n_levels, size)
        assert rec.maps[n].shape[1] == g[0] * g[1]
    assert layer_grid("down_blocks.1.attentions.0.transformer_blocks.0.attn1", 2, (13, 9)) == (7, 5)
    assert layer_grid("conv_in", 2, (13, 9)) is None


def test_wrong_sample_size_raises(unet):
    x, t, emb = _inputs(unet, batch=1, size=(16, 16))
    with pytest.raises(ValueError, match="expected 64 tokens for grid \\(8, 8\\), got 256"):
        with capture_attention(unet, sample_size=8):
            unet(x, t, encoder_hidden_states=emb)


def test_processors_restored(unet):
    before = dict(unet.attn_processors)
    x, t, emb = _inputs(unet)
    with capture_attention(unet, layers="down_blocks.*", features=default_feature_module(unet)):
        now = unet.attn_processors
        changed = {k for k in before if now[k] is not before[k]}
        assert changed == {k for k in before if k.startswith("down_blocks.") and ".attn1." in k}
        assert all(isinstance(now[k], RecordingAttnProcessor) for k in changed)
        unet(x, t, encoder_hidden_states=emb)
    assert all(unet.attn_processors[k] is p for k, p in before.items())
    assert not unet._forward_pre_hooks and not unet._forward_hooks
    assert all(not m._forward_hooks for m in unet.modules())


class ScaledProcessor:
    """A user's processor that changes the layer output: diffusers' default times ``gain``."""

    def __init__(self):
        self.base = diffusers.models.attention_processor.AttnProcessor2_0()
        self.calls = 0

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, gain=1.1):
        self.calls += 1
        return self.base(attn, hidden_states, encoder_hidden_states, attention_mask) * gain


def test_custom_processor_is_wrapped_not_bypassed(unet):
    x, t, emb = _inputs(unet)
    names = list(self_attention_layers(unet))
    modules = dict(unet.named_modules())
    before = dict(unet.attn_processors)
    custom = {n: ScaledProcessor() for n in names}
    try:
        for n in names:
            modules[n].set_processor(custom[n])
        expected = unet(x, t, encoder_hidden_states=emb).sample
        seen, handles = _attn_inputs(unet, names)
        try:
            with capture_attention(unet, per_layer=True) as rec:
                got = unet(x, t, encoder_hidden_states=emb).sample
        finally:
            for h in handles:
                h.remove()
        torch.testing.assert_close(got, expected, rtol=0, atol=0)  # the custom output, not the default's
        for n in names:  # the map of each layer's own projections, on the inputs the custom run gave it
            torch.testing.assert_close(rec.maps[n].double(), _probs_ref(modules[n], seen[n]), rtol=0, atol=2e-6)
            assert modules[n].processor is custom[n] and custom[n].calls >= 2  # called, then restored
        # The processor's own keyword arguments still reach it through the wrapper.
        kw = {"cross_attention_kwargs": {"gain": 2.0}}
        doubled = unet(x, t, encoder_hidden_states=emb, **kw).sample
        with capture_attention(unet):
            wrapped = unet(x, t, encoder_hidden_states=emb, **kw).sample
        torch.testing.assert_close(wrapped, doubled, rtol=0, atol=0)
        assert not torch.allclose(doubled, expected)
        with pytest.raises(ValueError, match=re.escape(names[0]) + ".*ScaledProcessor"):
            with capture_attention(unet, custom_processors="error"):
                pass
        assert all(modules[n].processor is custom[n] for n in names)
    finally:
        unet.set_attn_processor(before)


def test_processors_restored_after_exception(unet):
    before = dict(unet.attn_processors)
    with pytest.raises(RuntimeError, match="boom"):
        with capture_attention(unet, features=default_feature_module(unet)):
            raise RuntimeError("boom")
    assert all(unet.attn_processors[k] is p for k, p in before.items())
    x, t, emb = _inputs(unet, size=(16, 16))
    # An error raised inside the forward pass (token count mismatch) restores too.
    with pytest.raises(ValueError):
        with capture_attention(unet, sample_size=32):
            unet(x, t, encoder_hidden_states=emb)
    assert all(unet.attn_processors[k] is p for k, p in before.items())
    assert not unet._forward_pre_hooks and all(not m._forward_hooks for m in unet.modules())


def test_features_are_block_output(unet):
    name = default_feature_module(unet)
    assert name == "down_blocks.1.attentions.0"
    kept = {}
    module = dict(unet.named_modules())[name]
    handle = module.register_forward_hook(lambda m, i, out: kept.__setitem__("out", out[0].clone()))
    x, t, emb = _inputs(unet)
    try:
        with capture_attention(unet, layers="down_blocks.*", features=name) as rec:
            unet(x, t, encoder_hidden_states=emb)
    finally:
        handle.remove()
    h, w = kept["out"].shape[2:]
    assert rec.feature_grid == (h, w) == (8, 8)
    torch.testing.assert_close(rec.features, kept["out"].flatten(2).transpose(1, 2), rtol=0, atol=0)


@pytest.mark.parametrize("per_layer", [True, False])
def test_early_exit_matches_full(unet, per_layer):
    x, t, emb = _inputs(unet)
    feat = default_feature_module(unet)
    results = []
    for stop in (False, True):
        calls = []
        handle = unet.up_blocks[0].register_forward_hook(lambda *a, calls=calls: calls.append(1))
        try:
            with capture_attention(
                unet, layers="down_blocks.*", features=feat, per_layer=per_layer, stop_early=stop
            ) as rec:
                out = run_until_captured(rec, unet, x, t, encoder_hidden_states=emb)
        finally:
            handle.remove()
        assert (out is None) == stop and len(calls) == (0 if stop else 1)
        maps = rec.maps if per_layer else rec.grid_maps()
        results.append(({k: m.clone() for k, m in maps.items()}, rec.features.clone()))
    (full_maps, full_feat), (early_maps, early_feat) = results
    assert full_maps.keys() == early_maps.keys() and len(full_maps) > 0
    for k in full_maps:
        torch.testing.assert_close(early_maps[k], full_maps[k], rtol=0, atol=0)
    torch.testing.assert_close(early_feat, full_feat, rtol=0, atol=0)


def test_early_exit_swallowed_by_context(unet):
    x, t, emb = _inputs(unet)
    with capture_attention(unet, layers="down_blocks.0.*", stop_early=True) as rec:
        unet(x, t, encoder_hidden_states=emb)  # raises the private stop signal, swallowed on exit
    assert set(rec.grid_maps()) == {(16, 16)}


def test_no_host_sync(unet, monkeypatch):
    x, t, emb = _inputs(unet)
    from diffcut_gpu.attention import aggregate_attention

    def forbidden(*args, **kwargs):
        raise AssertionError("device-to-host copy during capture")

    with monkeypatch.context() as m:
        for attr in ("item", "cpu", "numpy", "tolist", "__bool__", "__int__", "__float__"):
            m.setattr(torch.Tensor, attr, forbidden)
        with capture_attention(unet, features=default_feature_module(unet), stop_early=True) as rec:
            run_until_captured(rec, unet, x, t, encoder_hidden_states=emb)
        maps = rec.grid_maps()
        out = aggregate_attention(list(maps.values()), list(maps), rec.feature_grid)
    with pytest.raises(AssertionError):  # the guard can fail
        with monkeypatch.context() as m:
            m.setattr(torch.Tensor, "item", forbidden)
            out.sum().item()
    assert out.shape == (2, 64, 64)


def test_exception(unet):
    with pytest.raises(ValueError, match="layers: expected patterns matching self-attention layers"):
        with capture_attention(unet, layers="nothing.*"):
            pass
    with pytest.raises(ValueError, match="layers: expected patterns"):  # cross-attention is never recorded
        with capture_attention(unet, layers="*attn2"):
            pass
    with pytest.raises(ValueError, match="resolutions: expected token resolutions"):
        with capture_attention(unet, resolutions=(32,), sample_size=16):
            pass
    with pytest.raises(ValueError, match="sample_size: expected"):
        with capture_attention(unet, sample_size=(16, 16, 16)):
            pass
    with pytest.raises(ValueError, match="features: expected a module name"):
        with capture_attention(unet, features="down_blocks.9"):
            pass
    with pytest.raises(ValueError, match="chunk_size: expected a positive int"):
        with capture_attention(unet, chunk_size=0):
            pass
    with pytest.raises(ValueError, match="per_layer=False needs every layer's token grid"):
        AttentionRecorder({"a": None})
    with pytest.raises(ValueError, match="unet: expected a UNet2DConditionModel"):
        default_feature_module(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="model: expected diffusers self-attention layers"):
        with capture_attention(torch.nn.Linear(2, 2)):
            pass


def test_sdxl_type_unet():
    unet = _tiny_unet("unet_tiny_xl")
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 4, 16, 16, generator=g)
    emb = torch.randn(2, 8, 32, generator=g)
    added = {
        "text_embeds": torch.randn(2, 32, generator=g),
        "time_ids": torch.tensor([[32.0, 32, 0, 0, 32, 32]] * 2),
    }
    feat = default_feature_module(unet)
    assert feat == "down_blocks.1.attentions.0"
    with capture_attention(
        unet, layers="down_blocks.*", features=feat, per_layer=True, stop_early=True
    ) as rec:
        run_until_captured(
            rec, unet, x, torch.full((2,), 10), encoder_hidden_states=emb, added_cond_kwargs=added
        )
    assert list(rec.maps) == [
        "down_blocks.1.attentions.0.transformer_blocks.0.attn1",
        "down_blocks.1.attentions.0.transformer_blocks.1.attn1",
    ]
    assert rec.features.shape == (2, 64, 64) and rec.feature_grid == (8, 8)


class _Wrap(torch.nn.Module):
    """A model that is not a UNet: one diffusers Attention layer on (B, N, C) or (B, C, h, w) input."""

    def __init__(self, **kwargs):
        super().__init__()
        from diffusers.models.attention_processor import Attention

        self.attn = Attention(**kwargs)

    def forward(self, x):
        return self.attn(x)


def test_generic_attention_module():
    torch.manual_seed(0)
    model = _Wrap(query_dim=16, heads=2, dim_head=8).eval()
    x = 3 * torch.randn(2, 36, 16)
    base = model(x)
    with capture_attention(model, per_layer=True, chunk_size=10) as rec:
        out = model(x)
    torch.testing.assert_close(out, base, rtol=0, atol=0)
    assert rec.grids == {"attn": (6, 6)}  # square grid inferred from 36 tokens
    torch.testing.assert_close(rec.maps["attn"].double(), _probs_ref(model.attn, x), rtol=0, atol=2e-6)
    with pytest.raises(ValueError, match="expected a square token grid"):
        with capture_attention(model, per_layer=True):
            model(torch.randn(1, 10, 16))
    with pytest.raises(ValueError, match="per_layer=False needs every layer's token grid"):
        with capture_attention(model):
            pass


def test_spatial_attention_with_group_norm_and_residual():
    # The layout of VAE / UNet mid-block attention: 4-D input, group norm, residual, output rescale.
    torch.manual_seed(0)
    kwargs = dict(query_dim=32, heads=2, dim_head=16, norm_num_groups=8, residual_connection=True, bias=True)
    model = _Wrap(rescale_output_factor=2.0, **kwargs).eval()
    x = 3 * torch.randn(2, 32, 4, 6)
    base = model(x)
    with capture_attention(model, per_layer=True, chunk_size=5) as rec:
        out = model(x)
    torch.testing.assert_close(out, base, rtol=0, atol=0)
    assert rec.grids == {"attn": (4, 6)}  # grid read from the 4-D input
    hidden = model.attn.group_norm(x.view(2, 32, 24)).transpose(1, 2)
    torch.testing.assert_close(rec.maps["attn"].double(), _probs_ref(model.attn, hidden), rtol=0, atol=2e-6)
