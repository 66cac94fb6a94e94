"""Flow-map networks, their time embeddings and heads (docs/math.md §3–4).

``protocol`` says what a network must provide (shapes and calls); ``registry`` resolves
``network.kind`` to a builder. Importing this package registers the built-in kinds (``mlp``, ``unet``).
"""
from .attention_jvp import attention_jvp
from .embeddings import RawTimes, SinusoidalTimes
from .heads import LogVarHead
from .mlp import FlowMapMLP
from .protocol import FlowMapNetwork, NativeJvp
from .registry import build_network, network_kinds, register_network
from .unet import FlowMapUNet, ImageLogVarHead

__all__ = ["FlowMapMLP", "FlowMapNetwork", "FlowMapUNet", "ImageLogVarHead", "LogVarHead", "NativeJvp", "RawTimes",
           "SinusoidalTimes", "attention_jvp", "build_network", "network_kinds", "register_network"]
