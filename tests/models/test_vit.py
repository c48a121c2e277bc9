"""ViTBackbone: patch-token transition matrix and features from Hugging Face vision transformers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

transformers = pytest.importorskip("transformers")

from diffcut_gpu.models.output import BackboneOutput  # noqa: E402
from diffcut_gpu.models.vit import IMAGENET_MEAN, IMAGENET_STD, ViTBackbone, target_size  # noqa: E402

DINOV2 = Path(__file__).resolve().parents[2].parent / "shared" / "models" / "dinov2-small"
needs_dinov2 = pytest.mark.skipif(not (DINOV2 / "config.json").is_file(), reason=f"no weights at {DINOV2}")


def tiny_dinov2(registers: int = 0) -> torch.nn.Module:
    """A 4-layer, 4-head random-weight DINOv2 with 4-pixel patches (default sdpa attention)."""
    torch.manual_seed(0)
    kw = dict(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=64,
        patch_size=4,
        image_size=16,
    )
    if registers:
        return transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(num_register_tokens=registers, **kw)
        ).eval()
    return transformers.Dinov2Model(transformers.Dinov2Config(**kw)).eval()


def reference(model, images, layers, special, feature_layer=None):
    """Float64 loops over layers and heads on the model's own output_attentions."""
    height, width = images.shape[-2:]
    size = target_size(height, width, 4, None)
    x = images
    if size != (height, width):
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    kw = {"interpolate_pos_encoding": True} if isinstance(model, transformers.ViTModel) else {}
    with torch.no_grad():
        out = model((x - mean) / std, output_attentions=True, output_hidden_states=True, **kw)
    n = out.attentions[0].shape[-1]
    acc = torch.zeros(x.shape[0], n, n, dtype=torch.float64)
    for i in layers:
        att = out.attentions[i].double()
        for head in range(att.shape[1]):
            acc += att[:, head]
    acc = acc[:, special:, special:]
    acc = acc / acc.sum(-1, keepdim=True)
    hidden = out.last_hidden_state if feature_layer is None else out.hidden_states[feature_layer]
    return acc, hidden[:, special:].double()


class TestTinyModel:
    @pytest.mark.parametrize("layers", [(-1,), (0, 2), (-3, -2, -1)])
    def test_matches_ref(self, layers):
        model = tiny_dinov2()
        backbone = ViTBackbone(model, layers=layers)
        images = torch.rand(2, 3, 17, 25, generator=torch.Generator().manual_seed(1))  # -> 16 x 24 pixels
        out = backbone(images)
        ref_att, ref_feat = reference(model, images, layers, special=1)
        assert isinstance(out, BackboneOutput)
        assert out.grid == (4, 6)
        assert out.attention.shape == (2, 24, 24) and out.features.shape == (2, 24, 32)
        torch.testing.assert_close(out.attention.double(), ref_att, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out.features.double(), ref_feat, atol=1e-6, rtol=1e-5)

    def test_only_used_layers_materialise_probabilities(self, monkeypatch):
        """Layers whose attention is not used run fused SDPA; the model is back to eager afterwards."""
        import transformers.integrations.sdpa_attention as sdpa

        calls = []
        original = sdpa.sdpa_attention_forward

        def counting(*args, **kwargs):
            calls.append(1)
            return original(*args, **kwargs)

        monkeypatch.setattr(sdpa, "sdpa_attention_forward", counting)
        model = tiny_dinov2()
        backbone = ViTBackbone(model, layers=(0, 2))
        images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(9))
        out = backbone(images)
        assert len(calls) == 2  # layers 1 and 3
        ref_att, _ = reference(model, images, (0, 2), special=1)  # direct call: eager, probabilities
        assert len(calls) == 2
        torch.testing.assert_close(out.attention.double(), ref_att, atol=1e-6, rtol=1e-5)

    def test_bfloat16_model(self):
        """A bfloat16 model gives float32 row-stochastic attention close to the float32 model's."""
        model = tiny_dinov2()
        images = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(10))
        full = ViTBackbone(model, layers=(-2, -1))(images)
        half = ViTBackbone(tiny_dinov2().to(torch.bfloat16), layers=(-2, -1))(images)
        assert half.attention.dtype == torch.float32
        torch.testing.assert_close(half.attention.sum(-1), torch.ones(1, 24), atol=1e-6, rtol=0)
        torch.testing.assert_close(half.attention, full.attention, atol=2e-2, rtol=0)

    def test_registers_removed(self):
        model = tiny_dinov2(registers=2)
        backbone = ViTBackbone(model, layers=(-2, -1))
        assert backbone.num_special_tokens == 3
        images = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(2))
        out = backbone(images)
        ref_att, ref_feat = reference(model, images, (-2, -1), special=3)
        assert out.attention.shape == (1, 20, 20) and out.grid == (4, 5)
        torch.testing.assert_close(out.attention.double(), ref_att, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(out.features.double(), ref_feat, atol=1e-6, rtol=1e-5)

    def test_feature_layer(self):
        model = tiny_dinov2()
        images = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
        for feature_layer, index in [(0, 1), (1, 2), (-1, -1)]:
            out = ViTBackbone(model, feature_layer=feature_layer)(images)
            _, ref_feat = reference(model, images, (-1,), special=1, feature_layer=index)
            torch.testing.assert_close(out.features.double(), ref_feat, atol=1e-6, rtol=1e-5)

    def test_vit_model_interpolates(self):
        torch.manual_seed(0)
        config = transformers.ViTConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            patch_size=4,
            image_size=16,
        )
        model = transformers.ViTModel(config, add_pooling_layer=False).eval()
        images = torch.rand(
            2, 3, 16, 28, generator=torch.Generator().manual_seed(4)
        )  # 4 x 7, not the 4 x 4 table
        out = ViTBackbone(model, layers=(0, 1))(images)
        ref_att, _ = reference(model, images, (0, 1), special=1)
        assert out.grid == (4, 7)
        torch.testing.assert_close(out.attention.double(), ref_att, atol=1e-6, rtol=1e-5)

    @pytest.mark.parametrize(
        ("resolution", "grid"), [(None, (8, 11)), (16, (4, 6)), ((10, 21), (3, 5)), ((8, 8), (2, 2))]
    )
    def test_resolution(self, resolution, grid):
        backbone = ViTBackbone(tiny_dinov2(), resolution=resolution)
        out = backbone(torch.rand(1, 3, 30, 45))
        assert out.grid == grid
        assert out.attention.shape == (1, grid[0] * grid[1], grid[0] * grid[1])

    def test_target_size(self):
        assert target_size(30, 45, 4, None) == (32, 44)
        assert target_size(30, 45, 4, 16) == (16, 24)
        assert target_size(3, 3, 14, None) == (14, 14)  # never below one patch
        assert target_size(224, 308, 14, None) == (224, 308)

    def test_exception(self):
        backbone = ViTBackbone(tiny_dinov2())
        with pytest.raises(ValueError, match="images: expected a tensor of shape"):
            backbone(torch.rand(3, 16, 16))
        with pytest.raises(ValueError, match="images: expected a tensor of shape"):
            backbone(torch.rand(1, 4, 16, 16))
        with pytest.raises(ValueError, match="images: expected a float tensor"):
            backbone(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
        with pytest.raises(ValueError, match=r"images: expected values in \[0, 1\]"):
            backbone(torch.full((1, 3, 16, 16), 255.0))
        with pytest.raises(ValueError, match="layers: expected layer indices"):
            ViTBackbone(tiny_dinov2(), layers=(4,))
        with pytest.raises(ValueError, match="layers: expected at least one"):
            ViTBackbone(tiny_dinov2(), layers=())
        with pytest.raises(ValueError, match="feature_layer: expected layer indices"):
            ViTBackbone(tiny_dinov2(), feature_layer=-5)
        for bad in (0, -3, (16,), (16, 0), 1.5, True):
            with pytest.raises(ValueError, match="resolution: expected"):
                ViTBackbone(tiny_dinov2(), resolution=bad)
        with pytest.raises(ValueError, match="std: expected 3 positive floats"):
            ViTBackbone(tiny_dinov2(), std=(0.2, 0.2, 0.0))
        with pytest.raises(ValueError, match="mean: expected 3"):
            ViTBackbone(tiny_dinov2(), mean=(0.5,))
        with pytest.raises(ValueError, match="model: expected a Hugging Face vision transformer"):
            ViTBackbone(torch.nn.Linear(2, 2))

    def test_from_pretrained_local(self, tmp_path):
        model = tiny_dinov2()
        model.save_pretrained(tmp_path)
        (tmp_path / "preprocessor_config.json").write_text(
            '{"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.5, 1]}'
        )
        backbone = ViTBackbone.from_pretrained(tmp_path, dtype=torch.float64, layers=(-1,), resolution=8)
        assert next(backbone.model.parameters()).dtype == torch.float64
        assert backbone.mean.flatten().tolist() == [0.5, 0.5, 0.5]
        assert backbone.std.flatten().tolist() == [0.25, 0.5, 1.0]
        out = backbone(torch.rand(1, 3, 16, 16))
        assert out.grid == (2, 2) and out.attention.dtype == torch.float64
        torch.testing.assert_close(out.attention.sum(-1), torch.ones(1, 4, dtype=torch.float64))
        explicit = ViTBackbone.from_pretrained(tmp_path, mean=(0.1, 0.2, 0.3), std=(1.0, 1.0, 1.0))
        assert explicit.mean.flatten().tolist() == pytest.approx([0.1, 0.2, 0.3])

    def test_missing_model_path(self, tmp_path):
        missing = tmp_path / "no-such-model"
        with pytest.raises(FileNotFoundError, match="no-such-model") as info:
            ViTBackbone.from_pretrained(missing)
        assert "local" in str(info.value) and info.value.__cause__ is None
        with pytest.raises(OSError, match=f"could not load model '{tmp_path}'"):
            ViTBackbone.from_pretrained(tmp_path)  # exists, but holds no checkpoint


@pytest.fixture(scope="module")
def backbone():
    return ViTBackbone.from_pretrained(DINOV2)


@needs_dinov2
class TestDinov2Small:
    @pytest.mark.parametrize(("size", "grid"), [((224, 224), (16, 16)), ((224, 308), (16, 22))])
    def test_smoke(self, backbone, size, grid):
        images = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(5))
        out = backbone(images)
        n = grid[0] * grid[1]  # CLS removed
        assert out.grid == grid
        assert out.attention.shape == (1, n, n) and out.attention.dtype == torch.float32
        assert out.features.shape == (1, n, 384)
        assert bool((out.attention >= 0).all())
        torch.testing.assert_close(out.attention.sum(-1), torch.ones(1, n), atol=1e-5, rtol=0)
        assert torch.isfinite(out.features).all()

    @pytest.mark.slow
    def test_batch_matches_single(self, backbone):
        images = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(6))
        batched = backbone(images)
        for b in range(2):
            single = backbone(images[b : b + 1])
            torch.testing.assert_close(batched.attention[b : b + 1], single.attention, atol=1e-5, rtol=1e-4)
            torch.testing.assert_close(batched.features[b : b + 1], single.features, atol=1e-4, rtol=1e-4)

    def test_deterministic(self, backbone):
        images = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(7))
        first, second = backbone(images), backbone(images)
        assert torch.equal(first.attention, second.attention)
        assert torch.equal(first.features, second.features)

    def test_reads_preprocessor_stats(self, backbone):
        torch.testing.assert_close(backbone.mean.flatten(), torch.tensor(IMAGENET_MEAN), atol=1e-6, rtol=0)
        torch.testing.assert_close(backbone.std.flatten(), torch.tensor(IMAGENET_STD), atol=1e-6, rtol=0)


def test_loading_messages(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        ViTBackbone.from_pretrained(tmp_path / "gone")
    assert "does not exist" in str(err.value) and "download" not in str(err.value)
    with pytest.raises(OSError) as err:
        ViTBackbone.from_pretrained(tmp_path)  # a folder without a checkpoint
    assert "download" not in str(err.value) and "config.json" in str(err.value)
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(OSError, match="backbone='diffusion'"):
        ViTBackbone.from_pretrained(tmp_path)


def test_size_multiple_and_shared_attention_helper():
    from diffcut_gpu.attention import hf_attention_to_transition

    model = tiny_dinov2(registers=2)
    backbone = ViTBackbone(model, layers=(-2, -1))
    assert backbone.size_multiple == backbone.patch_size
    images = torch.rand(1, 3, 32, 32)
    out = backbone(images)
    with torch.no_grad():
        raw = model(backbone.preprocess(images), output_attentions=True)
    ref = hf_attention_to_transition(raw.attentions, num_special_tokens=3, layers=(-2, -1))
    # The backbone averages heads inside its own attention pass (SDPA elsewhere), so only the
    # summation order differs from the helper applied to transformers' eager maps.
    torch.testing.assert_close(out.attention, ref, rtol=1e-5, atol=1e-6)
