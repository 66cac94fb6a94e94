"""Magnitude-preserving building blocks of the image UNet (docs/math.md §4, the image UNet).

Each op keeps the root mean square of unit-scale inputs at 1, so activations neither grow nor
shrink through depth and no normalisation layer with statistics is needed:

- `MPConv`: a convolution or linear without bias whose weight is used with each output channel's
  row normalised to unit norm IN THE FORWARD (the gradient goes through the normalisation). A
  unit-norm row maps iid unit-variance inputs to a unit-variance output. docs/math.md writes the
  same weight as ``w / ‖w‖ / sqrt(fan_in)`` of a weight with unit-variance elements (row norm
  ``sqrt(fan_in)``); flowcore stores the rows on the unit sphere directly, which is the same
  effective weight. `MPConv.project_to_sphere` puts the stored rows back on the sphere after an
  optimiser step (forced weight normalisation), which leaves the forward unchanged;
- `mp_silu`, `mp_sum`, `mp_cat`, `pixel_norm`, `clip_activations`;
- `downsample` / `upsample`: resampling by 2 with the [1, 1] box filter (2×2 means, 2×2 copies).

Every op is plain differentiable torch with a forward-mode derivative, so ``torch.func.jvp``
runs through all of them; nothing is detached.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MPConv", "clip_activations", "downsample", "mp_cat", "mp_silu", "mp_sum", "pixel_norm", "unit_rows",
           "upsample"]

# E[silu(x)²] = 0.3557 for x ~ N(0, 1): dividing by its square root, 0.596, gives unit second moment.
SILU_RMS = 0.596
# Activations are clipped to ±256 (docs/math.md §4): far outside the unit scale the layers keep,
# so it only stops a diverging run from overflowing (bf16 / fp16) rather than shaping the function.
CLIP = 256.0
# Guards a division by a norm; rows are unit-norm (or random, norm ~ 1) in practice, so the guard
# never changes a value and `project_to_sphere` leaves the forward bit-for-bit comparable.
_NORM_FLOOR = 1e-12
_PIXEL_EPS = 1e-4   # added to a pixel's RMS: a zero pixel stays zero instead of dividing by 0


def unit_rows(weight: torch.Tensor) -> torch.Tensor:
    """`weight` with each output channel's row (all but the first axis) scaled to unit L2 norm."""
    dims = tuple(range(1, weight.ndim))
    norm = torch.linalg.vector_norm(weight, dim=dims, keepdim=True)
    return weight / norm.clamp_min(_NORM_FLOOR)


class MPConv(nn.Module):
    """A bias-free magnitude-preserving linear (``kernel = ()``) or 2-D convolution (``kernel = (k, k)``,
    k odd, 'same' padding): ``y = conv(x, gain · unit_rows(w))``.

    A linear takes ``(B, in_channels)``, a convolution ``(B, in_channels, H, W)``. `gain` (a number or
    a 0-d tensor, e.g. a learned output gain) scales the normalised weight.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: tuple[int, ...] = ()):
        super().__init__()
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"MPConv needs positive channel counts, got {in_channels} -> {out_channels}")
        if kernel and (len(kernel) != 2 or kernel[0] != kernel[1] or kernel[0] % 2 == 0):
            raise ValueError(f"MPConv kernel must be () for a linear or (k, k) with k odd, got {kernel}")
        self.in_channels, self.out_channels, self.kernel = in_channels, out_channels, tuple(kernel)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, *kernel))

    @property
    def fan_in(self) -> int:
        return self.in_channels * math.prod(self.kernel)

    def forward(self, x: torch.Tensor, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        return self.apply_weight(x, self.effective_weight(x.dtype, gain))

    def effective_weight(self, dtype: torch.dtype, gain: float | torch.Tensor = 1.0) -> torch.Tensor:
        """``gain · unit_rows(w)`` in `dtype`: the normalised weight, computed once per call even
        when the stacked-tangent JVP applies it to several stacks (flowcore.nn.unet.jvp)."""
        norm = torch.linalg.vector_norm(self.weight, dim=tuple(range(1, self.weight.ndim)), keepdim=True)
        # the scale on the (out, 1, …) norms, then one pass over the weight (unit_rows(w)·gain)
        return (self.weight * (gain / norm.clamp_min(_NORM_FLOOR))).to(dtype)

    def apply_weight(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """The linear map itself, ``x @ wᵀ`` or a 'same' convolution with `w`."""
        if not self.kernel:
            return x @ w.t()
        return F.conv2d(x, w, padding=self.kernel[0] // 2)

    @torch.no_grad()
    def project_to_sphere(self) -> None:
        """Forced weight normalisation: store each row at unit norm (call after an optimiser step)."""
        self.weight.copy_(unit_rows(self.weight))

    def extra_repr(self) -> str:
        kind = f"kernel={self.kernel}" if self.kernel else "linear"
        return f"{self.in_channels} -> {self.out_channels}, {kind}"


def mp_silu(x: torch.Tensor) -> torch.Tensor:
    """``silu(x) / 0.596``: unit second moment for a standard normal input. Written as
    ``x·sigmoid(x)``: ``F.silu``'s derivative (``silu_backward``) has no forward-mode rule, so a
    nested ``torch.func.jvp`` (a second-order objective) could not run through it."""
    return x * torch.sigmoid(x) / SILU_RMS


def mp_sum(a: torch.Tensor, b: torch.Tensor, w: float) -> torch.Tensor:
    """``((1 − w)a + wb) / sqrt((1 − w)² + w²)``: a blend of two independent unit-scale tensors that
    stays at unit scale (w = 0.3 is the residual and attention balance)."""
    return ((1 - w) * a + w * b) / math.sqrt((1 - w) ** 2 + w ** 2)


def mp_cat(a: torch.Tensor, b: torch.Tensor, w: float = 0.5, dim: int = 1) -> torch.Tensor:
    """Concatenate a and b along `dim` so that the result has unit mean square per element and b's
    share of the total square is ``w²/((1 − w)² + w²)`` whatever the two channel counts (w = 0.5:
    both parts weigh equally). With ``n_a``, ``n_b`` channels and ``c² = (n_a + n_b)/((1 − w)² + w²)``,
    a is scaled by ``c(1 − w)/sqrt(n_a)`` and b by ``c·w/sqrt(n_b)``."""
    n_a, n_b = a.shape[dim], b.shape[dim]
    c = math.sqrt((n_a + n_b) / ((1 - w) ** 2 + w ** 2))
    return torch.cat([a * (c * (1 - w) / math.sqrt(n_a)), b * (c * w / math.sqrt(n_b))], dim=dim)


def pixel_norm(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Scale each pixel's vector along `dim` (the channels) to norm ``sqrt(C)``: unit RMS per pixel."""
    rms = torch.sqrt(x.square().mean(dim=dim, keepdim=True))
    return x / (rms + _PIXEL_EPS)


def clip_activations(x: torch.Tensor) -> torch.Tensor:
    """Clip to ±256 (docs/math.md §4)."""
    return x.clamp(-CLIP, CLIP)


def downsample(x: torch.Tensor) -> torch.Tensor:
    """Halve H and W with the [1, 1] box filter: each output pixel is the mean of a 2×2 block."""
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"downsample needs even H and W, got {h}×{w}")
    return x.reshape(b, c, h // 2, 2, w // 2, 2).mean(dim=(3, 5))


def upsample(x: torch.Tensor) -> torch.Tensor:
    """Double H and W with the [1, 1] box filter: each pixel is copied into a 2×2 block."""
    b, c, h, w = x.shape
    return x[:, :, :, None, :, None].expand(b, c, h, 2, w, 2).reshape(b, c, 2 * h, 2 * w)
