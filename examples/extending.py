"""The worked examples of docs/extending.md: a data system, a flow and a measurement of one's
own, each a few lines; tests/test_extending.py runs them through train.py's pipeline."""

from __future__ import annotations

import torch

from eqflow.data.base import Snapshots, SnapshotSystem
from eqflow.models.flow import FlowBase
from eqflow.protocols.base import Measurement, Protocol


class Vortex(SnapshotSystem):
    """A data system: an isotropic Gaussian in 2-D whose ground-truth dynamics is the rigid
    rotation (-y, x), which preserves it."""

    dim = 2

    def __init__(self, n_samples: int = 2000, std: float = 1.0):
        if n_samples < 2 or std <= 0:
            raise ValueError(f"data.n_samples={n_samples} must be >= 2 and data.std={std} > 0")
        self.n_samples, self.std = n_samples, std

    def generate(self, generator: torch.Generator) -> Snapshots:
        x = self.std * torch.randn(self.n_samples, 2, generator=generator)
        return Snapshots.standardised(x, standardise=False)

    def true_field(self, snapshots: Snapshots):
        return lambda x: torch.stack([-x[:, 1], x[:, 0]], dim=1)


class ScaledRotationFlow(FlowBase):
    """A flow: v = c J s with J the quarter turn and one learned scale c, trained to make |v|
    as large as |s| on noised data. J is skew, so div(p v) = 0 for every c (an exact flow)."""

    def __init__(self, score, dim: int, lr: float = 0.05):
        super().__init__(score)
        if dim != 2:
            raise ValueError(f"ScaledRotationFlow is 2-D; the data has dimension {dim}")
        self.save_hyperparameters(ignore=["score"])
        self.scale = torch.nn.Parameter(torch.tensor(0.1))

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        s = self.score(x)
        return self.scale * torch.stack([-s[:, 1], s[:, 0]], dim=1)

    def training_step(self, x0: torch.Tensor, batch_idx: int) -> torch.Tensor:
        x = self.score_model.noise(x0)
        v, s = self.velocity(x), self.score(x)
        loss = (v.pow(2).sum(1).mean() - s.pow(2).sum(1).mean()).pow(2)
        self.log("train/loss", loss, on_step=False, on_epoch=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


class MeanSpeed(Protocol):
    """A measurement: the mean speed |v| of the flow on ``n_points`` data points."""

    name = "speed"

    def __init__(self, n_points: int = 256):
        self.n_points = n_points

    def measure(self, flow, data, generator, figures) -> Measurement:
        pick = torch.randperm(len(data.x), generator=generator)[: self.n_points]
        with torch.no_grad():
            v = flow.velocity(data.x[pick].to(flow.device))
        return Measurement({"speed/mean": float(v.norm(dim=1).mean())})
