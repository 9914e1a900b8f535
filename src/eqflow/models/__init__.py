"""Models: score models (one :class:`Score` interface), the learned flows (on the published loss,
and exact by construction), the training-free flow, baselines, optimisers and schedules."""

from eqflow.models.exact import ExactFlowModule
from eqflow.models.exact_local import LocalExactFlow
from eqflow.models.exact_lowrank import LowRankExactFlow
from eqflow.models.flow import EquilibriumFlowModule, FlowBase
from eqflow.models.glide import GlideFlow
from eqflow.models.image_score import ImageScoreModule
from eqflow.models.score import EnergyScoreModule, Score, ScoreModule
from eqflow.models.training_free import TrainingFreeFlow

__all__ = [
    "EnergyScoreModule",
    "EquilibriumFlowModule",
    "ExactFlowModule",
    "FlowBase",
    "GlideFlow",
    "ImageScoreModule",
    "LocalExactFlow",
    "LowRankExactFlow",
    "Score",
    "ScoreModule",
    "TrainingFreeFlow",
]
