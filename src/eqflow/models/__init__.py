"""Models: score models (one :class:`Score` interface), the learned and the training-free flow,
baselines, optimisers and schedules."""
from eqflow.models.flow import EquilibriumFlowModule, FlowBase
from eqflow.models.image_score import ImageScoreModule
from eqflow.models.score import Score, ScoreModule
from eqflow.models.training_free import TrainingFreeFlow

__all__ = ["EquilibriumFlowModule", "FlowBase", "ImageScoreModule", "Score", "ScoreModule",
           "TrainingFreeFlow"]
