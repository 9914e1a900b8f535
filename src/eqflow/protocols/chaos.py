"""Chaos: the flow's largest Lyapunov exponent, and whether it holds over a longer horizon."""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path

import torch

from eqflow.data.base import random_subset
from eqflow.metrics.lyapunov import REST_SPEED, max_lyapunov
from eqflow.protocols.base import Measurement, Protocol

log = logging.getLogger(__name__)

# A positive exponent over a finite horizon T is also what linear separation gives (a shear, a
# torus): log(c T) / T, which shrinks to a third or less over 4 T. An exponent that keeps at least
# half its value over the longer horizon is counted as sustained (exponential separation keeps all).
SUSTAINED_RATIO = 0.5


def flow_lyapunov(flow, data: torch.Tensor, n_trajectories: int, dt: float, steps: int,
                  burn_in: int, bound: float | None, generator: torch.Generator,
                  perturbation: float = 1e-8, renorm_every: int = 1,
                  record_at: int | None = None) -> dict:
    """The flow's largest Lyapunov exponent (:func:`max_lyapunov`) on a float64 copy, from
    ``n_trajectories`` data points scaled by sqrt(alpha)."""
    f64 = copy.deepcopy(flow).double().eval()
    start = random_subset(data, n_trajectories, generator).double().to(flow.device)
    start = start * torch.sqrt(f64.alpha)
    return max_lyapunov(f64.velocity, start, dt, steps, burn_in, renorm_every=renorm_every,
                        perturbation=perturbation, bound=bound, generator=generator,
                        record_at=record_at)


def sustained_chaos(flow, data: torch.Tensor, settings: dict, factor: int,
                 generator: torch.Generator) -> dict:
    """Follow the flow for ``factor`` times the horizon of ``settings``: ``lyapunov_long`` (the
    exponent over the long horizon), ``lyapunov_long_first`` (the same trajectories' over the
    first horizon) and ``sustained`` (the long one positive and at least SUSTAINED_RATIO of the
    first: chaos keeps its exponent, linear separation loses most of it)."""
    res = flow_lyapunov(flow, data, generator=generator, record_at=settings["steps"],
                        **{**settings, "steps": settings["steps"] * factor})
    lam, first = res["lyapunov"], res["lyapunov_at_record"]
    return {"lyapunov_long": lam, "lyapunov_long_first": first,
            "sustained": bool(math.isfinite(lam) and lam > 0 and lam >= SUSTAINED_RATIO * first)}


class Chaos(Protocol):
    """Largest Lyapunov exponent of the flow (float64 copy), raw and per unit distance.

    The defaults follow the tangent dynamics closely (a twin 1e-8 away, pulled back every step,
    after 500 steps of burn-in). The published estimator (PAPER_NOTES 6) is ``perturbation=1e-5,
    renorm_every=2500, burn_in=0``: a finite perturbation pulled back after each of 2 segments."""

    name = "lyapunov"

    def __init__(self, n_trajectories: int = 8, dt: float = 0.1, steps: int = 5000,
                 burn_in: int = 500, bound: float | None = 4.0, perturbation: float = 1e-8,
                 renorm_every: int = 1):
        self.n_trajectories, self.dt, self.steps, self.burn_in = n_trajectories, dt, steps, burn_in
        self.bound, self.perturbation, self.renorm_every = bound, perturbation, renorm_every

    @property
    def settings(self) -> dict:
        return {"n_trajectories": self.n_trajectories, "dt": self.dt, "steps": self.steps,
                "burn_in": self.burn_in, "bound": self.bound, "perturbation": self.perturbation,
                "renorm_every": self.renorm_every}

    def measure(self, flow, data, generator, figures: Path | None) -> Measurement:
        res = flow_lyapunov(flow, data.x, generator=generator, **self.settings)
        if res["n_kept"] < res["n_total"]:
            log.warning("Lyapunov: %d of %d trajectories left |x| < %s and were dropped",
                        res["n_total"] - res["n_kept"], res["n_total"], self.bound)
        if res["n_at_rest"]:
            log.warning("Lyapunov: %d of %d trajectories came to rest on a fixed point of the flow "
                        "(mean speed < %g); a flow that preserves p has no attracting points",
                        res["n_at_rest"], res["n_kept"], REST_SPEED)
        return Measurement({"lyapunov/max": res["lyapunov"],
                            "lyapunov/speed_normalised": res["lyapunov_speed_normalised"],
                            "lyapunov/mean_speed": res["mean_speed"],
                            "lyapunov/per_trajectory": res["per_trajectory"],
                            "lyapunov/n_kept": res["n_kept"], "lyapunov/n_at_rest": res["n_at_rest"]})
