"""Token budget: every image is resized to about the same number of tokens, aspect kept."""

from __future__ import annotations

import pytest
import torch

from diffcut_gpu.cli.pipeline import processing_size
from diffcut_gpu.models.vit import DEFAULT_TOKEN_BUDGET, budget_size, target_size


@pytest.mark.parametrize(
    ("size", "grid"),
    [((481, 321), (39, 26)), ((321, 481), (26, 39)), ((800, 590), (37, 27)), ((6000, 4000), (39, 26))],
)
def test_grid_for_photos(size, grid):
    h, w = budget_size(*size, 14, DEFAULT_TOKEN_BUDGET)
    assert (h % 14, w % 14) == (0, 0)
    assert (h // 14, w // 14) == grid
    assert abs(grid[0] * grid[1] - 1024) <= 30  # about the budget
    assert abs(grid[0] / grid[1] - size[0] / size[1]) < 0.05  # aspect kept
    assert target_size(*size, 14, None, DEFAULT_TOKEN_BUDGET) == (h, w)
    assert processing_size(*size, 448, "budget", 14, 1024) == (h, w)  # the CLI uses the same rule


def test_small_budget_and_overrides():
    assert budget_size(30, 3000, 14, 4) == (14, 280)  # never below one cell
    assert target_size(481, 321, 14, 224, DEFAULT_TOKEN_BUDGET) == (336, 224)  # resolution overrides
    assert target_size(481, 321, 14, None, None) == (476, 322)  # no budget: the image's own size
    with pytest.raises(ValueError, match="tokens"):
        budget_size(10, 10, 14, 0)


def test_vit_backbone_applies_budget():
    transformers = pytest.importorskip("transformers")
    from diffcut_gpu.models import ViTBackbone

    torch.manual_seed(0)
    config = transformers.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, patch_size=4, image_size=16)
    model = ViTBackbone(transformers.Dinov2Model(config), layers=(-1,), token_budget=64)
    out = model(torch.rand(1, 3, 600, 400))
    assert out.grid == (10, 7) and out.attention.shape == (1, 70, 70)  # 600x400 -> 40x28 px -> 10x7 tokens
    with pytest.raises(ValueError, match="token_budget"):
        ViTBackbone(transformers.Dinov2Model(config), layers=(-1,), token_budget=0)
