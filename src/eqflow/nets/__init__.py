"""Plain nn.Modules used by the Lightning modules."""

from eqflow.nets.mlp import FlowMLP, PositionalEncoding, ScoreMLP
from eqflow.nets.norm import NonAffineBatchNorm

__all__ = ["FlowMLP", "NonAffineBatchNorm", "PositionalEncoding", "ScoreMLP"]
