"""Distribution preservation (docs/method.md §6, Appendix B): MMD^2 to the start set over time."""

from __future__ import annotations

from pathlib import Path

import torch

from eqflow import plots
from eqflow.data.base import random_subset
from eqflow.dynamics.integrators import integrate_ode
from eqflow.metrics.mmd import mmd2, mmd_over_time, resolve_bandwidth
from eqflow.protocols.base import Measurement, Protocol


def mmd_curve(field, start: torch.Tensor, dt: float, steps: int, bandwidth: float) -> torch.Tensor:
    """MMD² between ``start`` and the points ``field`` carries it to, after each of ``steps`` RK4
    steps of ``dt`` (paired and unbiased: exactly 0 at the start). The one implementation of the
    preservation measurement: the end of a fit, evaluate.py and the study all call it."""
    return mmd_over_time(integrate_ode(field, start, dt, steps), bandwidth)


class Preservation(Protocol):
    """Start from ``n_points`` samples of the noised data the flow preserves, integrate with
    RK4, MMD^2 to the start set at each step. The pure score flow dx/dt = s(x) from the same
    points is the reference that drifts; a second draw of the data gives the noise floor."""

    name = "mmd"

    def __init__(
        self,
        n_points: int = 256,
        dt: float = 0.1,
        steps: int = 100,
        bandwidth: float | str = 0.5,
        score_baseline: bool = True,
    ):
        self.n_points, self.dt, self.steps = n_points, dt, steps
        self.bandwidth, self.score_baseline = bandwidth, score_baseline

    def measure(self, flow, data, generator, figures: Path | None) -> Measurement:
        g = generator
        x = data.x.to(flow.device)
        start = flow.score_model.noise(random_subset(x, self.n_points, g).to(flow.device), g)
        other = flow.score_model.noise(random_subset(x, self.n_points, g).to(flow.device), g)
        width = resolve_bandwidth(self.bandwidth, start)
        curves = {"flow": mmd_curve(flow.velocity, start, self.dt, self.steps, width)}
        if self.score_baseline:
            curves["score flow"] = mmd_curve(flow.score, start, self.dt, self.steps, width)
        floor = float(mmd2(start, other, width))
        times = [self.dt * k for k in range(self.steps + 1)]
        out = Measurement(
            {
                "mmd/final": float(curves["flow"][-1]),
                "mmd/curve": curves["flow"].cpu(),
                "mmd/noise_floor": floor,
                "mmd/bandwidth": width,
                "mmd/times": times,
            }
        )
        if "score flow" in curves:
            out.values["mmd/score_flow_final"] = float(curves["score flow"][-1])
            out.values["mmd/score_flow_curve"] = curves["score flow"].cpu()
        if figures is not None:
            out.figures["figures/mmd"] = plots.curves(
                {k: v.cpu() for k, v in curves.items()},
                figures / "mmd.png",
                "time",
                "MMD^2 to start",
                "Distribution preservation",
                x={k: times for k in curves},
            )
        return out
