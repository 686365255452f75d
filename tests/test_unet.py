"""The denoiser presets: conditioning channels in, denoised channels out, the paper's size."""

import pytest
import torch

from models.unet import UNET_PRESETS, build_unet, count_parameters


def test_tiny_unet_predicts_only_the_denoised_channel():
    unet = build_unet("tiny", in_channels=3, out_channels=1)
    x = torch.randn(2, 3, 32, 32)
    out = unet(x, torch.tensor([10, 500])).sample
    assert out.shape == (2, 1, 32, 32)


def test_the_presets_grow_in_cost_and_tiny_stays_cheap():
    """Cost in FLOPs (counted, not timed: a wall-clock bound fails on a busy machine): the tiny preset,
    which the tests and the demo bundles use, costs a small fraction of the paper's network."""
    from models.benchmarks.harness import count_forward_flops

    flops = {p: count_forward_flops(build_unet(p, in_channels=3), 3, 64) for p in ("tiny", "small", "paper")}
    assert flops["tiny"] < flops["small"] < flops["paper"]
    assert flops["tiny"] < flops["paper"] / 10 and flops["tiny"] < 3e9


def test_dualview_shape_three_in_three_out():
    unet = build_unet("tiny", in_channels=3, out_channels=3)
    assert unet(torch.randn(1, 3, 32, 32), 0).sample.shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_paper_preset_has_the_papers_size():
    """The reference U-Net has 78.25 M parameters; diffusers' layout of the same widths has 75.37 M."""
    three = count_parameters(build_unet("paper", in_channels=3))
    one = count_parameters(build_unet("paper", in_channels=1))
    assert three == pytest.approx(75.37e6, rel=0.01)
    assert 74e6 < one < three < 79e6
    assert UNET_PRESETS["paper"].sample_size == 256


def test_paper_preset_has_attention_only_at_the_lowest_resolution():
    cfg = UNET_PRESETS["paper"].config(3, 1)
    assert cfg["block_out_channels"] == (128, 128, 256, 256, 512)
    assert cfg["down_block_types"] == ("DownBlock2D",) * 4 + ("AttnDownBlock2D",)
    assert cfg["up_block_types"] == ("AttnUpBlock2D",) + ("UpBlock2D",) * 4


def test_unknown_preset_is_refused():
    with pytest.raises(ValueError, match="unknown U-Net preset"):
        build_unet("huge", in_channels=1)
