"""The tiny UNet the tests share: 8×8 images, one channel, two levels, one block per level,
attention at 4×4, in float64."""
from __future__ import annotations

import torch

from flowcore.nn import FlowMapUNet

F64 = torch.float64


def tiny_unet(seed: int = 0, gains: bool = True, **sizes) -> FlowMapUNet:
    """With `gains`, the output gain and every block's embedding gain are drawn non-zero (at
    initialisation they are 0: v̂ ≡ 0 and no block sees the time), so v̂ depends on every input and
    parameter. time_scale 1000 (the paper's is 1) gives fast time features, so derivative checks in
    s and t are far from trivial. `sizes` override any constructor argument (two heads of 8
    channels by default)."""
    torch.manual_seed(seed)
    config = dict(resolution=8, in_channels=1, model_channels=8, channel_mult=(1, 2), num_blocks=1,
                  attn_resolutions=(4,), channels_per_head=8, time_scale=1000.0)
    net = FlowMapUNet(**{**config, **sizes}).to(F64)
    if gains:
        gen = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for p in net.parameters():
                if p.ndim == 0:
                    p.copy_(0.5 + torch.rand((), generator=gen, dtype=F64))
    return net
