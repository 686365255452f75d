"""Structural check of stage 3 with an oracle network that knows the answer.

The oracle predicts the noise whose x0 is the centre of its local-context channel, upsampled by k.
If every patch is placed where its context was cropped (no drift, no flip, no transposition) and
stitching keeps first-writer pixels, the stitched image is EXACTLY the mid image upsampled by k,
in every stitching mode and for every sampler.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers.models.unets.unet_2d import UNet2DOutput

from models.geometry import MamboGeometry
from models.mambo import MamboPipeline
from models.options import SamplingOptions
from models.schedulers import alphas_cumprod

GEO = MamboGeometry(s=48, k=3, overlap=12)  # every tile origin and context origin is a multiple of k


class ContextOracle(torch.nn.Module):
    """Predicts eps = (x_t - sqrt(abar) x0*) / sqrt(1 - abar) with x0* = centre of the context, upsampled."""

    def __init__(self, in_channels: int, geo: MamboGeometry) -> None:
        super().__init__()
        self.config = SimpleNamespace(in_channels=in_channels, out_channels=1)
        self.geo = geo
        self.anchor = torch.nn.Parameter(torch.zeros(1), requires_grad=False)  # gives .dtype and .device
        self.abar = alphas_cumprod()

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> UNet2DOutput:
        s, k = self.geo.s, self.geo.k
        a, b = (k - 1) * s // (2 * k), (k - 1) * s // (2 * k) + s // k
        target = x[:, 1:2, a:b, a:b].repeat_interleave(k, -2).repeat_interleave(k, -1)
        abar = self.abar[int(t)]
        return UNet2DOutput(sample=(x[:, :1] - abar.sqrt() * target) / (1 - abar).sqrt())


class BoundedX0Net(torch.nn.Module):
    """A random tiny U-Net behind an x0 parametrisation: x0 = tanh(unet(x, t)), eps derived from it.

    Untrained eps-predictors make DDIM trajectories chaotic (x0 estimates of +-100 at t = 999), so
    last-bit differences grow to visible ones; trained networks do not behave like that. Bounding x0
    keeps the real network, its conditioning channels and every batching path, with stable outputs.
    """

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet
        self.config = unet.config
        self.abar = alphas_cumprod()

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    @property
    def device(self) -> torch.device:
        return self.unet.device

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> UNet2DOutput:
        x0 = torch.tanh(self.unet(x, t).sample)
        abar = self.abar[int(t)]
        return UNet2DOutput(sample=(x[:, :1] - abar.sqrt() * x0) / (1 - abar).sqrt())


def _mid_phantom(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = 0.5 + 0.3 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + 0.15 * (xx / w) - 0.1 * (yy / h)
    img[:6, :4] = 1.0  # an asymmetric marker: a flip or transposition cannot hide
    return np.clip(img, 0, 1).astype(np.float32)


@pytest.mark.parametrize(
    ("sampler", "stitching"),
    [("ddim", "raster"), ("ddim", "wavefront"), ("ddim", "fused"), ("dpmsolver", "wavefront"), ("ddpm", "wavefront")],
)
def test_oracle_patches_stitch_into_the_upsampled_mid_image_exactly(sampler, stitching):
    oracle = ContextOracle(3, GEO)
    pipe = MamboPipeline(ContextOracle(1, GEO), oracle, oracle, geometry=GEO)  # only the patch network runs
    h, w = 48 + 36 * 3, 48 + 36 * 2  # 156 x 120: 4 x 3 patches, last row/column clamped on the k-grid
    plan = pipe.plan(h, w)
    mid = _mid_phantom(plan.local_grid.height, plan.local_grid.width)
    opts = pipe.spec(SamplingOptions(sampler, 4, stitching=stitching, seeds=(0,), skip_background=False))
    full, stats = pipe.generate_full(np.zeros((48, 48), np.float32), mid, plan, opts)
    expected = np.repeat(np.repeat(mid, 3, 0), 3, 1)[:h, :w]
    assert full.shape == (h, w) and stats.tiles == 12
    np.testing.assert_allclose(full, expected, atol=2e-4)
