"""How exactly a flow satisfies the equilibrium equation: its continuity residual relative to
|v . s| on noised data points (vector data only)."""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from eqflow.data.base import random_subset
from eqflow.metrics.residual import continuity_residual
from eqflow.protocols.base import Measurement, Protocol


class Residual(Protocol):
    """``residual/relative``: rms(div v + v . s) / rms(v . s) on ``n_points`` noised data points
    (float64, exact divergence). A flow exact by construction leaves only the score model's
    non-conservative part; the published loss leaves a residual of its own."""

    name = "residual"

    def __init__(self, n_points: int = 1024):
        self.n_points = n_points

    def measure(self, flow, data, generator: torch.Generator, figures: Path | None) -> Measurement:
        if data.x.ndim != 2:  # images: d JVPs of an image field are out of reach
            return Measurement()
        f64 = copy.deepcopy(flow).double().eval()
        x0 = random_subset(data.x, self.n_points, generator).double().to(f64.device)
        x = f64.score_model.noise(x0, generator)
        res = continuity_residual(f64.velocity, f64.score, x)
        return Measurement({f"residual/{k}": v for k, v in res.items()})
