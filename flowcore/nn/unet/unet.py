"""`FlowMapUNet`: the EDM2-style magnitude-preserving image UNet with two-time conditioning
(docs/math.md §4, the image UNet), registered as ``network.kind = "unet"``.

    v̂_{s,t}(x) = σ_d · UNet(x/σ_d; s, t − s),   σ_d = 0.5 for images in [−1, 1]

The encoder starts with a 3×3 MP convolution of the input and one extra constant channel; each
level then has `num_blocks` encoder blocks (the levels below the first start with a down-sampling
block). The decoder mirrors it with `num_blocks + 1` blocks per level, each taking one encoder
activation through ``mp_cat`` (two blocks without a skip at the lowest level, an up-sampling
block at the others). The last 3×3 MP convolution has a learned gain initialised to 0, so
``v̂ = 0`` at initialisation. Blocks: flowcore.nn.unet.blocks; layers: flowcore.nn.unet.layers.

It follows the network protocol (flowcore.nn.protocol) with ``forward`` (what the reference
interpreter and ``torch.func.jvp`` see) and the native ``jvp`` / ``jvp_many`` that compiled
objectives pick up (flowcore.runtime.netcalls): the primal and the tangents stacked along the batch
through every convolution, explicit tangent formulas for the nonlinear pieces and the fused
attention JVP (flowcore.nn.unet.jvp).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..registry import register_network
from .blocks import UNetBlock
from .embedding import TwoTimeEmbedding
from .jvp import network_jvp
from .layers import MPConv, mp_cat
from .logvar import ImageLogVarHead
from .pointwise import plain_autograd

PRESETS = ("cifar10", "imagenet64_s", "digits")


class FlowMapUNet(nn.Module):
    """A velocity ``net(s, t, x)`` on images ``(B, in_channels, resolution, resolution)``.

    ``channel_mult[i]·model_channels`` channels at level i (resolution / 2^i); attention in every
    block whose resolution is in `attn_resolutions`, with `channels_per_head` channels per head;
    `dropout` in the residual branches of calls made with a ``dropout_seed``; `sigma_data` the
    σ_d of the preconditioning; `time_scale` the frequency scale of the positional embeddings
    (flowcore.nn.unet.embedding).
    """

    def __init__(self, resolution: int = 32, in_channels: int = 3, model_channels: int = 128,
                 channel_mult: Sequence[int] = (2, 2, 2), num_blocks: int = 4,
                 attn_resolutions: Sequence[int] = (16,),
                 channels_per_head: int = 64, dropout: float = 0.0, sigma_data: float = 0.5,
                 time_scale: float = 1.0):
        super().__init__()
        channel_mult, attn_resolutions = [int(m) for m in channel_mult], [int(r) for r in attn_resolutions]
        if in_channels < 1 or model_channels < 1 or num_blocks < 1:
            raise ValueError(f"FlowMapUNet: in_channels, model_channels and num_blocks must be positive, "
                             f"got {in_channels}, {model_channels}, {num_blocks}")
        if not channel_mult or min(channel_mult) < 1:
            raise ValueError(f"FlowMapUNet: channel_mult must be positive multipliers, one per level, "
                             f"got {channel_mult}")
        if resolution < 1 or resolution % 2 ** (len(channel_mult) - 1):
            raise ValueError(f"FlowMapUNet: resolution {resolution} must be divisible by 2^(levels − 1) = "
                             f"{2 ** (len(channel_mult) - 1)} ({len(channel_mult)} levels in channel_mult)")
        if not sigma_data > 0:
            raise ValueError(f"FlowMapUNet: sigma_data must be positive, got {sigma_data}")
        if not 0 <= dropout < 1:
            raise ValueError(f"FlowMapUNet: dropout must lie in [0, 1), got {dropout}")
        self.resolution, self.in_channels, self.sigma_data = resolution, in_channels, float(sigma_data)
        self.config = dict(resolution=resolution, in_channels=in_channels, model_channels=model_channels,
                           channel_mult=channel_mult, num_blocks=num_blocks, attn_resolutions=attn_resolutions,
                           channels_per_head=channels_per_head, dropout=dropout, sigma_data=sigma_data,
                           time_scale=time_scale)
        widths = [model_channels * m for m in channel_mult]
        emb_channels = max(widths)
        self.embedding = TwoTimeEmbedding(widths[0], emb_channels, time_scale)
        common = dict(channels_per_head=channels_per_head, dropout=dropout)

        self.conv_in = MPConv(in_channels + 1, widths[0], (3, 3))   # + the constant channel
        self.encoder = nn.ModuleList()
        skips, channels = [widths[0]], widths[0]
        for level, width in enumerate(widths):
            res = resolution >> level
            if level > 0:
                self.encoder.append(UNetBlock(channels, channels, emb_channels, flavor="enc", resolution=res,
                                              resample="down", **common))
                skips.append(channels)
            for _ in range(num_blocks):
                self.encoder.append(UNetBlock(channels, width, emb_channels, flavor="enc", resolution=res,
                                              attention=res in attn_resolutions, **common))
                channels = width
                skips.append(channels)

        self.decoder = nn.ModuleList()
        self.decoder_takes_skip: list[bool] = []
        for level in reversed(range(len(widths))):
            res, width = resolution >> level, widths[level]
            if level == len(widths) - 1:
                self.decoder.append(UNetBlock(channels, channels, emb_channels, flavor="dec", resolution=res,
                                              attention=True, **common))
                self.decoder.append(UNetBlock(channels, channels, emb_channels, flavor="dec", resolution=res, **common))
                self.decoder_takes_skip += [False, False]
            else:
                self.decoder.append(UNetBlock(channels, channels, emb_channels, flavor="dec", resolution=res,
                                              resample="up", **common))
                self.decoder_takes_skip.append(False)
            for _ in range(num_blocks + 1):
                self.decoder.append(UNetBlock(channels + skips.pop(), width, emb_channels, flavor="dec",
                                              resolution=res, attention=res in attn_resolutions, **common))
                self.decoder_takes_skip.append(True)
                channels = width
        self.conv_out = MPConv(channels, in_channels, (3, 3))
        self.out_gain = nn.Parameter(torch.zeros([]))

    # -- presets (docs/math.md §4, sizes) -----------------------------------------------------------
    @classmethod
    def cifar10(cls, **overrides: Any) -> "FlowMapUNet":
        """CIFAR-10: 32×32×3, 128 channels, multipliers [2, 2, 2], 4 blocks, attention at 16×16, dropout 0.13."""
        return cls(**{**dict(resolution=32, in_channels=3, model_channels=128, channel_mult=(2, 2, 2), num_blocks=4,
                             attn_resolutions=(16,), dropout=0.13), **overrides})

    @classmethod
    def imagenet64_s(cls, **overrides: Any) -> "FlowMapUNet":
        """CelebA-64 / AFHQ-64: 64×64×3, 128 channels, [1, 2, 3, 4], 3 blocks, attention at 16 and 8, no dropout."""
        return cls(**{**dict(resolution=64, in_channels=3, model_channels=128, channel_mult=(1, 2, 3, 4), num_blocks=3,
                             attn_resolutions=(16, 8), dropout=0.0), **overrides})

    @classmethod
    def digits(cls, **overrides: Any) -> "FlowMapUNet":
        """CPU-sized, for the 8×8 digits (or 16×16 with ``resolution=16``): one channel, 32 channels,
        [1, 2], 2 blocks, attention at the lowest resolution with 32 channels per head (one head)."""
        resolution = overrides.get("resolution", 8)
        return cls(**{**dict(resolution=8, in_channels=1, model_channels=32, channel_mult=(1, 2), num_blocks=2,
                             attn_resolutions=(resolution // 2,), channels_per_head=32, dropout=0.0), **overrides})

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "FlowMapUNet":
        """The preset `name` (one of `PRESETS`), with keyword overrides of its sizes."""
        if name not in PRESETS:
            raise ValueError(f"unknown FlowMapUNet preset {name!r}; choose one of {', '.join(PRESETS)}")
        return getattr(cls, name)(**overrides)

    # -- evaluation ---------------------------------------------------------------------------------
    def _check(self, s, t, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        want = (self.in_channels, self.resolution, self.resolution)
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != want:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"FlowMapUNet expects x shaped (B, {', '.join(map(str, want))}), got {shape}")
        times = []
        for name, tau in (("s", s), ("t", t)):
            tau = torch.as_tensor(tau, dtype=x.dtype, device=x.device)
            if tau.ndim == 0:
                tau = tau.expand(x.shape[0])
            if tau.shape != (x.shape[0],):
                raise ValueError(f"FlowMapUNet expects {name} shaped ({x.shape[0]},) or a scalar, "
                                 f"got {tuple(tau.shape)}")
            times.append(tau)
        return times[0], times[1]

    def _check_tangent(self, k: int, tangent, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Tangent `k` as full ``(ṡ, ṫ, ẋ)`` tensors in x's dtype: None is zero, a scalar time broadcast."""
        if not isinstance(tangent, (tuple, list)) or len(tangent) != 3:
            raise ValueError(f"FlowMapUNet: tangent {k} must be a triple (ds, dt, dx), got {tangent!r:.80}")
        ds, dt, dx = tangent
        if dx is None:
            dx = torch.zeros_like(x)
        elif not isinstance(dx, torch.Tensor) or dx.shape != x.shape:
            shape = tuple(dx.shape) if isinstance(dx, torch.Tensor) else type(dx).__name__
            raise ValueError(f"FlowMapUNet: the tangent dx (tangent {k}) must be shaped like x, {tuple(x.shape)}, "
                             f"got {shape}")
        zero = x.new_zeros(x.shape[0])
        try:
            ds, dt = self._check(zero if ds is None else ds, zero if dt is None else dt, x)
        except ValueError as error:
            raise ValueError(f"{error} (the time tangents ds, dt of tangent {k})") from None
        return ds, dt, dx.to(x.dtype)

    def _generator(self, x: torch.Tensor, dropout_seed: int | None) -> torch.Generator | None:
        if dropout_seed is None or self.dropout_rate <= 0:
            return None
        generator = torch.Generator(device=x.device)
        generator.manual_seed(int(dropout_seed))
        return generator

    def jvp(self, s, t, x, ds=None, dt=None, dx=None, *, dropout_seed: int | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(v̂, v̇)``: the velocity and its derivative along ``(ṡ, ṫ, ẋ)`` (None = 0), through the
        native stacked path; `dropout_seed` gives the forward's masks to both."""
        v, (v_dot,) = self.jvp_many(s, t, x, [(ds, dt, dx)], dropout_seed=dropout_seed)
        return v, v_dot

    def jvp_many(self, s, t, x, tangents, live=None, *, dropout_seed: int | None = None
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``(v̂, [v̇_1, …, v̇_k])`` for k ≥ 0 tangents ``(ṡ, ṫ, ẋ)`` at one primal: one pass with the
        primal and the live tangents stacked along the batch (one convolution call per layer), the
        tangents with ``live[j] = False`` (needed only under stop-gradient) in a second stack without
        a graph (flowcore.nn.unet.jvp). No tangents: the forward itself."""
        s, t = self._check(s, t, x)
        tangents = list(tangents)
        live = [True] * len(tangents) if live is None else [bool(flag) for flag in live]
        if len(live) != len(tangents):
            raise ValueError(f"FlowMapUNet.jvp_many: {len(live)} live flags for {len(tangents)} tangents")
        if not tangents:
            return self.forward(s, t, x, dropout_seed=dropout_seed), []
        full = [self._check_tangent(k, tangent, x) for k, tangent in enumerate(tangents)]
        return network_jvp(self, s, t, x, full, live, self._generator(x, dropout_seed))

    @property
    def dropout_rate(self) -> float:
        """The residual branches' dropout; > 0 asks flowcore for a ``dropout_seed`` in the calls of
        dropout terms (the network protocol, flowcore.nn.protocol)."""
        return float(self.config["dropout"])

    def forward(self, s: torch.Tensor, t: torch.Tensor, x: torch.Tensor, *,
                dropout_seed: int | None = None) -> torch.Tensor:
        """``v̂_{s,t}(x)``, shaped like x. With a `dropout_seed` (and dropout > 0) the residual
        branches drop out with masks drawn from a generator seeded by it: the same seed, the same
        masks (docs/math.md §4).

        In plain autograd the forward runs the native path without tangents (flowcore.nn.unet.jvp):
        the fused pointwise and attention kernels, the same function. Under torch.func transforms,
        forward-mode AD or torch.compile, or with forward hooks on a submodule (which see only the
        submodules' own calls), it runs the plain torch modules below, which every transform
        differentiates."""
        s, t = self._check(s, t, x)
        generator = self._generator(x, dropout_seed)
        if plain_autograd() and not torch.compiler.is_compiling() and not self._hooked():
            return network_jvp(self, s, t, x, [], [], generator)[0]
        emb = self.embedding(s, t)
        h = x / self.sigma_data
        h = self.conv_in(torch.cat([h, torch.ones_like(h[:, :1])], dim=1))
        skips = [h]
        for block in self.encoder:
            h = block(h, emb, generator)
            skips.append(h)
        for block, takes_skip in zip(self.decoder, self.decoder_takes_skip):
            if takes_skip:
                h = mp_cat(h, skips.pop())
            h = block(h, emb, generator)
        return self.sigma_data * self.conv_out(h, gain=self.out_gain)

    def _hooked(self) -> bool:
        """Whether a forward (pre-)hook is set on a submodule or globally."""
        from torch.nn.modules import module as torch_module

        if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
            return True
        return any(m._forward_hooks or m._forward_pre_hooks for m in self.modules() if m is not self)

    @torch.no_grad()
    def project_to_sphere(self) -> None:
        """Put every MP weight row back on the unit sphere; the trainer calls it after each optimiser
        step (docs/math.md §4). The forward is unchanged by it (the forward normalises anyway)."""
        for module in self.modules():
            if isinstance(module, MPConv):
                module.project_to_sphere()

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config.items())


# -- the "unet" network kind ----------------------------------------------------------------------------
def gemm_layers(net: FlowMapUNet) -> list[tuple[int, int, int]]:
    """The GEMMs of one sample through `net`, for the benchmark's FLOP count and its GEMM bound, as
    ``(fan_in, fan_out, rows per sample)``: a k×k convolution at H×W pixels is its im2col GEMM
    ``(H·W) × (fan_in·k²) → fan_out``; attention's two products per head, summed over heads, are
    ``(H·W) × C → H·W`` and ``(H·W) × (H·W) → C`` (no weights: their "weight gradient" in the
    bound is an over-count of two small GEMMs per attention block); the embedding's linears one row.
    Elementwise work (normalisations, activations, resampling) is not counted."""
    shapes = [(lin.fan_in, lin.out_channels, 1) for lin in (net.embedding.linear_s, net.embedding.linear_d)]
    pixels = net.resolution ** 2
    shapes.append((net.conv_in.fan_in, net.conv_in.out_channels, pixels))
    for block in [*net.encoder, *net.decoder]:
        pix = block.resolution ** 2
        shapes.append((block.emb_linear.fan_in, block.emb_linear.out_channels, 1))
        convs = [block.conv_res0, block.conv_res1] + ([block.conv_skip] if block.conv_skip is not None else [])
        if block.attention is not None:
            convs += [block.attention.qkv, block.attention.proj]
            shapes += [(block.out_channels, pix, pix), (pix, block.out_channels, pix)]
        shapes += [(conv.fan_in, conv.out_channels, pix) for conv in convs]
    shapes.append((net.conv_out.fan_in, net.conv_out.out_channels, pixels))
    return shapes


def build_unet(config: Any, data_shape: tuple[int, ...], sigma: float) -> FlowMapUNet:
    """The ``"unet"`` kind on images ``(C, H, H)``: ``network.preset`` (cifar10, imagenet64_s, digits)
    with the data's channels and resolution, or, with no preset, the explicit sizes
    ``network.model_channels``, ``channel_mult``, ``num_blocks``, ``attn_resolutions`` and
    ``channels_per_head``. ``network.dropout`` (the diagonal calls', docs/math.md §4) is a number, or
    "preset": the preset's (0 without one). σ_d is the run's σ (docs/math.md §1)."""
    if len(data_shape) != 3 or data_shape[1] != data_shape[2]:
        raise ValueError(f"network.kind = 'unet' trains on square images (C, H, H); the data has samples shaped "
                         f"{data_shape}")
    channels, resolution, _ = data_shape
    dropout = getattr(config, "dropout", "preset")
    explicit = {} if dropout == "preset" else {"dropout": float(dropout)}
    if config.preset:
        if config.preset not in PRESETS:
            raise ValueError(f"network.preset = {config.preset!r}: choose one of {', '.join(PRESETS)}")
        return FlowMapUNet.preset(config.preset, resolution=resolution, in_channels=channels, sigma_data=sigma,
                                  **explicit)
    return FlowMapUNet(resolution, channels, config.model_channels, config.channel_mult, config.num_blocks,
                       config.attn_resolutions, config.channels_per_head, explicit.get("dropout", 0.0), sigma)


register_network("unet", build_unet, gemm_layers=gemm_layers, weight_head=ImageLogVarHead)
