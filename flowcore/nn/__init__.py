"""Flow-map networks, their time embeddings and heads (MATH.md §3–4)."""
from .embeddings import RawTimes, SinusoidalTimes
from .heads import LogVarHead
from .mlp import FlowMapMLP

__all__ = ["FlowMapMLP", "LogVarHead", "RawTimes", "SinusoidalTimes"]
