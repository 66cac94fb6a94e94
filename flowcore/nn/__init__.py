"""Flow-map networks and heads (MATH.md §3–4)."""
from .heads import LogVarHead
from .mlp import FlowMapMLP

__all__ = ["FlowMapMLP", "LogVarHead"]
