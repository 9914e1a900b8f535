"""Fidelity to the ground-truth field (docs/method.md §6): |cos| between representations."""

from __future__ import annotations

from pathlib import Path

import torch

from eqflow.data.base import random_subset
from eqflow.metrics.fidelity import aligned_abs_cosine, representation
from eqflow.protocols.base import Measurement, Protocol


class Fidelity(Protocol):
    """|cos| between the flow's and the ground-truth field's representations on ``n_points``
    data points scaled by sqrt(alpha). Nothing when the data has no ground-truth field."""

    name = "fidelity"

    def __init__(self, n_points: int = 1024):
        self.n_points = n_points

    def measure(self, flow, data, generator, figures: Path | None) -> Measurement:
        truth = data.true_field()
        if truth is None:
            return Measurement()
        pts = random_subset(data.x, self.n_points, generator).to(flow.device)
        pts = pts * torch.sqrt(flow.alpha)
        ref = representation(truth, pts)
        return Measurement(
            {
                "fidelity/cos_truth": aligned_abs_cosine(representation(flow.velocity, pts), ref),
                "fidelity/cos_truth_score": aligned_abs_cosine(
                    representation(flow.score, pts), ref
                ),
            }
        )
