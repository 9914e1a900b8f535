"""Chaos: the flow's largest Lyapunov exponent, and whether it holds over a longer horizon."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable
from pathlib import Path

import torch

from eqflow.data.base import random_subset
from eqflow.metrics.lyapunov import REST_SPEED, max_lyapunov, max_lyapunov_groups
from eqflow.models.exact import ExactFlowModule, stacked_exact_field
from eqflow.models.flow import EquilibriumFlowModule
from eqflow.nets.batched import BatchedFlowMLP
from eqflow.protocols.base import Measurement, Protocol

log = logging.getLogger(__name__)

# A positive exponent over a finite horizon T is also what linear separation gives (a shear, a
# torus): log(c T) / T, which shrinks to a third or less over 4 T. An exponent that keeps at least
# half its value over the longer horizon is counted as sustained (exponential separation keeps all).
SUSTAINED_RATIO = 0.5

# ``bound: data``: the box is this many times the data's own (the largest |x_i| of any point),
# so that it scales with the data's size and dimension (the fixed 4.0 suits a few standardised
# coordinates; in 100 of them, a point of the data itself has max_i |x_i| near 3.5).
DATA_BOX_MARGIN = 1.5


def resolve_bound(bound: float | str | None, data: torch.Tensor) -> float | None:
    """The chaos box as a number: None (no box), a number as it is, or ``"data"``:
    :data:`DATA_BOX_MARGIN` times the data's largest coordinate in absolute value."""
    if bound == "data":
        return DATA_BOX_MARGIN * float(data.abs().max())
    if isinstance(bound, str):
        raise ValueError(f"lyapunov bound={bound!r}: a number > 0, null (no box) or data")
    return bound


def flow_lyapunov(
    flow,
    data: torch.Tensor,
    n_trajectories: int,
    dt: float,
    steps: int,
    burn_in: int,
    bound: float | None,
    generator: torch.Generator,
    perturbation: float = 1e-8,
    renorm_every: int = 1,
    record_at: int | None = None,
) -> dict:
    """The flow's largest Lyapunov exponent (:func:`max_lyapunov`) on a float64 copy, from
    ``n_trajectories`` data points scaled by sqrt(alpha)."""
    f64 = copy.deepcopy(flow).double().eval()
    start = random_subset(data, n_trajectories, generator).double().to(flow.device)
    start = start * torch.sqrt(f64.alpha)
    bound = resolve_bound(bound, data)
    return max_lyapunov(
        f64.velocity,
        start,
        dt,
        steps,
        burn_in,
        renorm_every=renorm_every,
        perturbation=perturbation,
        bound=bound,
        generator=generator,
        record_at=record_at,
    )


def stacked_field(
    flows: list, compile: bool = False
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """One float64 field (K, N, d) -> (K, N, d) for K flows of one kind and architecture (row k
    moves by flow k), or None where they do not stack. ``compile``: an exact flows' field runs
    through ``torch.compile`` (its many small operations fused: 2-3x faster on a CPU after
    ~10 s of compiling per input shape; worth it for long integrations)."""
    if len(flows) < 2:
        return None
    if all(type(f) is ExactFlowModule for f in flows):
        field = stacked_exact_field(flows)
        if field is not None and compile:
            field = torch.compile(field, dynamic=False)
        return field
    if not all(type(f) is EquilibriumFlowModule for f in flows):
        return None
    layouts = {tuple((k, tuple(v.shape)) for k, v in f.net.state_dict().items()) for f in flows}
    activations = {tuple(type(m).__name__ for m in f.net.net) for f in flows}
    if len(layouts) > 1 or len(activations) > 1:
        return None
    return (
        BatchedFlowMLP([f.net for f in flows])
        .double()
        .to(flows[0].device)
        .eval()
        .with_running_stats
    )


def batched_field(
    flows: list, rows: int, compile: bool = False
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """One float64 field for several flows of one kind and architecture, on inputs made of
    blocks of K x ``rows`` rows (a start set, or starts and their twins stacked): within each
    block, rows k*rows .. (k+1)*rows - 1 move by flow k. None where the flows cannot be stacked
    (other kinds, other shapes)."""
    stacked = stacked_field(flows, compile)
    if stacked is None:
        return None
    k = len(flows)

    def field(x: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        by_flow = x.reshape(-1, k, rows, d).transpose(0, 1).reshape(k, -1, d)
        v = stacked(by_flow)
        return v.reshape(k, -1, rows, d).transpose(0, 1).reshape(x.shape)

    return field


def flow_lyapunov_many(
    flows: list,
    data: torch.Tensor,
    generators: list[torch.Generator],
    n_trajectories: int,
    dt: float,
    steps: int,
    burn_in: int,
    bound: float | None,
    perturbation: float = 1e-8,
    renorm_every: int = 1,
    record_at: int | None = None,
    compile: bool = False,
) -> list[dict]:
    """:func:`flow_lyapunov` of every flow (flow k drawing from ``generators[k]``), all twins
    integrated in one batched call where the flows stack; the same numbers as one at a time
    (``compile``: that call's field compiled, see :func:`stacked_field`)."""
    field = batched_field(flows, min(n_trajectories, len(data)), compile)
    bound = resolve_bound(bound, data)
    if field is None:
        return [
            flow_lyapunov(
                f,
                data,
                n_trajectories,
                dt,
                steps,
                burn_in,
                bound,
                g,
                perturbation,
                renorm_every,
                record_at,
            )
            for f, g in zip(flows, generators)
        ]
    starts, directions = [], []
    for flow, g in zip(flows, generators):  # the draws flow_lyapunov makes, in its order
        start = random_subset(data, n_trajectories, g).double()
        starts.append(start * torch.sqrt(flow.alpha.double().cpu()))
        directions.append(torch.randn(start.shape, generator=g, dtype=torch.float64))
    return max_lyapunov_groups(
        field,
        torch.cat(starts).to(flows[0].device),
        torch.cat(directions),
        dt,
        steps,
        burn_in,
        renorm_every,
        perturbation,
        bound,
        record_at=record_at,
        groups=len(flows),
    )


def sustained_chaos(
    flow, data: torch.Tensor, settings: dict, factor: int, generator: torch.Generator
) -> dict:
    """Follow the flow for ``factor`` times the horizon of ``settings``: ``lyapunov_long`` (the
    exponent over the long horizon), ``lyapunov_long_first`` (the same trajectories' over the
    first horizon) and ``sustained`` (the long one positive and at least SUSTAINED_RATIO of the
    first: chaos keeps its exponent, linear separation loses most of it)."""
    return sustained_chaos_many([flow], data, settings, factor, [generator])[0]


def sustained_chaos_many(
    flows: list, data: torch.Tensor, settings: dict, factor: int, generators: list[torch.Generator]
) -> list[dict]:
    """:func:`sustained_chaos` of every flow, batched where they stack."""
    results = flow_lyapunov_many(
        flows,
        data,
        generators,
        record_at=settings["steps"],
        **{**settings, "steps": settings["steps"] * factor},
    )
    out = []
    for res in results:
        lam, first = res["lyapunov"], res["lyapunov_at_record"]
        out.append(
            {
                "lyapunov_long": lam,
                "lyapunov_long_first": first,
                "sustained": bool(
                    math.isfinite(lam) and lam > 0 and lam >= SUSTAINED_RATIO * first
                ),
            }
        )
    return out


class Chaos(Protocol):
    """Largest Lyapunov exponent of the flow (float64 copy), raw and per unit distance.

    The defaults follow the tangent dynamics closely (a twin 1e-8 away, pulled back every step,
    after 500 steps of burn-in). The published estimator (docs/method.md §6) is ``perturbation=1e-5,
    renorm_every=2500, burn_in=0``: a finite perturbation pulled back after each of 2 segments."""

    name = "lyapunov"

    def __init__(
        self,
        n_trajectories: int = 8,
        dt: float = 0.1,
        steps: int = 5000,
        burn_in: int = 500,
        bound: float | str | None = 4.0,
        perturbation: float = 1e-8,
        renorm_every: int = 1,
        compile: bool = False,
    ):
        self.n_trajectories, self.dt, self.steps, self.burn_in = n_trajectories, dt, steps, burn_in
        self.bound, self.perturbation, self.renorm_every = bound, perturbation, renorm_every
        self.compile = compile

    @property
    def settings(self) -> dict:
        return {
            "n_trajectories": self.n_trajectories,
            "dt": self.dt,
            "steps": self.steps,
            "burn_in": self.burn_in,
            "bound": self.bound,
            "perturbation": self.perturbation,
            "renorm_every": self.renorm_every,
        }

    def measure(self, flow, data, generator, figures: Path | None) -> Measurement:
        return self._measurement(flow_lyapunov(flow, data.x, generator=generator, **self.settings))

    def measure_many(self, flows, data, generators, figures) -> list[Measurement]:
        """All flows' twins in one batched integration (where the flows stack)."""
        return [
            self._measurement(r)
            for r in flow_lyapunov_many(
                flows, data.x, generators, compile=self.compile, **self.settings
            )
        ]

    def _measurement(self, res: dict) -> Measurement:
        if res["n_kept"] < res["n_total"]:
            log.warning(
                "Lyapunov: %d of %d trajectories left |x| < %s and were dropped",
                res["n_total"] - res["n_kept"],
                res["n_total"],
                self.bound,
            )
        if res["n_at_rest"]:
            log.warning(
                "Lyapunov: %d of %d trajectories came to rest on a fixed point of the flow "
                "(mean speed < %g); a flow that preserves p has no attracting points",
                res["n_at_rest"],
                res["n_kept"],
                REST_SPEED,
            )
        return Measurement(
            {
                "lyapunov/max": res["lyapunov"],
                "lyapunov/speed_normalised": res["lyapunov_speed_normalised"],
                "lyapunov/mean_speed": res["mean_speed"],
                "lyapunov/per_trajectory": res["per_trajectory"],
                "lyapunov/n_kept": res["n_kept"],
                "lyapunov/n_at_rest": res["n_at_rest"],
            }
        )
