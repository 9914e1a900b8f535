"""The flow over the data: a 2-D quiver with trajectories, 3-D trajectories, or a pair plot of
the first coordinates for d > 3."""

from __future__ import annotations

from pathlib import Path

import torch

from eqflow import plots
from eqflow.data.base import random_subset
from eqflow.dynamics.integrators import integrate_ode
from eqflow.protocols.base import Measurement, Protocol


class Figures(Protocol):
    """``n_trajectories`` trajectories of ``steps`` RK4 steps from noised data points, drawn over
    the data (scaled by sqrt(alpha), the level the flow lives at): a quiver (d = 2), 3-D
    trajectories (d = 3) or a pair plot of the first five coordinates (d > 3)."""

    name = "figures"

    def __init__(self, n_trajectories: int = 8, dt: float = 0.05, steps: int = 400):
        self.n_trajectories, self.dt, self.steps = n_trajectories, dt, steps

    def measure(self, flow, data, generator, figures: Path | None) -> Measurement:
        out = Measurement()
        if figures is None or data.x.ndim != 2 or data.dim < 2:
            return out
        x = data.x
        start = flow.score_model.noise(
            random_subset(x, self.n_trajectories, generator).to(flow.device), generator
        )
        traj = integrate_ode(flow.velocity, start, self.dt, self.steps).cpu()
        shown = x * torch.sqrt(flow.alpha.cpu())
        title = f"{type(flow).__name__} on {type(data.system).__name__}"
        if data.dim == 2:
            out.figures["figures/flow"] = plots.quiver_2d(
                lambda p: flow.velocity(p.to(flow.device)),
                shown,
                traj,
                figures / "quiver.png",
                title,
            )
        elif data.dim == 3:
            out.figures["figures/flow"] = plots.trajectory_3d(
                traj, shown, figures / "trajectory_3d.png", title
            )
        else:
            names = [
                f"{n} (standardised)"
                for n in getattr(data.system, "names", None) or [f"x{i}" for i in range(data.dim)]
            ]
            out.figures["figures/flow"] = plots.pair_plot(
                traj, shown, figures / "pairs.png", title, names=names
            )
        return out
