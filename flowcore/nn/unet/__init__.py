"""The EDM2-style image UNet with two-time conditioning (docs/math.md §4, the image UNet).

``layers``: the magnitude-preserving ops; ``embedding``: the two-time conditioning; ``attention``:
cosine multi-head attention; ``blocks``: the residual block; ``unet``: `FlowMapUNet`, its presets
and the ``"unet"`` network kind; ``logvar``: `ImageLogVarHead`, the learned loss weight;
``jvp``: the native JVP (primal and tangents stacked along the batch) behind `FlowMapUNet.jvp` /
``jvp_many``; ``pointwise``: its fused pointwise jets (mp_silu, FiLM + mp_silu, clipping, pixel norm);
``normalised_weights``: every layer's weight normalisation as one op.
"""
from .logvar import ImageLogVarHead
from .unet import PRESETS, FlowMapUNet

__all__ = ["PRESETS", "FlowMapUNet", "ImageLogVarHead"]
