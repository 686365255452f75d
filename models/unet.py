"""The channel-conditioned denoiser: a diffusers ``UNet2DModel`` whose extra input channels are context.

Input channels = the denoised channels (1 for MAMBO, 3 for the dual-view model) + the clean
conditioning channels; output channels = the denoised channels only, so the network predicts the
noise of what it denoises and nothing else (paper §3.2.1: noise and loss on channel 0 only).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from diffusers import UNet2DModel

Preset = Literal["tiny", "cpu", "small", "paper"]


@dataclass(frozen=True)
class UNetPreset:
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    norm_num_groups: int
    attention_head_dim: int
    attention_levels: int  # attention at this many of the lowest resolutions (and always in the mid block)
    sample_size: int

    def config(
        self, in_channels: int, out_channels: int, sample_size: int | None = None, classes: int = 0
    ) -> dict[str, Any]:
        n = len(self.block_out_channels)
        down = tuple("AttnDownBlock2D" if i >= n - self.attention_levels else "DownBlock2D" for i in range(n))
        up = tuple("AttnUpBlock2D" if i < self.attention_levels else "UpBlock2D" for i in range(n))
        return {
            "sample_size": sample_size or self.sample_size,
            "in_channels": in_channels,
            "out_channels": out_channels,
            "block_out_channels": self.block_out_channels,
            "layers_per_block": self.layers_per_block,
            "down_block_types": down,
            "up_block_types": up,
            "norm_num_groups": self.norm_num_groups,
            "attention_head_dim": self.attention_head_dim,
            # one embedding per class plus the last, "no class" (label dropout, classifier-free guidance)
            "num_class_embeds": classes + 1 if classes else None,
        }


#: "paper": the reference's dim 128 x (1, 2, 2, 4, 4), 2 blocks per level, attention at 16x16 + mid;
#: ~75.4 M parameters in diffusers' block layout (the lucidrains original has 78.25 M).
UNET_PRESETS: dict[str, UNetPreset] = {
    "tiny": UNetPreset((32, 64, 64), 1, 8, 8, 1, 32),
    # "cpu": shaped for samples per second on a CPU (the demo recipe): four levels reach a 8x8
    # bottleneck at s = 64 (a wide receptive field), narrow early levels keep the full-resolution
    # convolutions cheap, attention only in the mid block.
    "cpu": UNetPreset((16, 32, 64, 128), 1, 8, 8, 0, 64),
    "small": UNetPreset((64, 128, 128, 256), 1, 16, 16, 1, 64),
    "paper": UNetPreset((128, 128, 256, 256, 512), 2, 32, 32, 1, 256),
}


def build_unet(
    preset: Preset | str, in_channels: int, out_channels: int = 1, sample_size: int | None = None, classes: int = 0
) -> UNet2DModel:
    """A randomly initialised denoiser of the given preset (``in_channels`` includes the conditioning);
    ``classes`` > 0 adds a class embedding (see :func:`null_class`)."""
    if preset not in UNET_PRESETS:
        raise ValueError(f"unknown U-Net preset {preset!r}; choose one of {sorted(UNET_PRESETS)}")
    if out_channels > in_channels:
        raise ValueError("out_channels (denoised channels) cannot exceed in_channels")
    if classes < 0:
        raise ValueError("classes must be >= 0")
    return UNet2DModel(**UNET_PRESETS[preset].config(in_channels, out_channels, sample_size, classes))


def null_class(unet: UNet2DModel) -> int | None:
    """The label meaning "no class" of a class-conditional network (its last embedding), None if classless.

    Trained with label dropout, so the same network is the unconditional model of classifier-free guidance.
    """
    n = getattr(unet.config, "num_class_embeds", None)
    return int(n) - 1 if n else None


def count_parameters(unet: UNet2DModel) -> int:
    return sum(p.numel() for p in unet.parameters())
