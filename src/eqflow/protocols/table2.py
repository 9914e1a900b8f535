"""Fidelity of image dynamics to a pattern simulator (Table 2 protocol, docs/method.md §6).

From a clean pattern x0 (a start; the published protocol uses one, ``n_starts`` more), run the
irreversible Langevin SDE ``dx = (v + eta s) dt + sqrt(2 eta) dW`` by Heun's method; the
representation is the EMA of the trajectory at step ``ema_until`` minus x0. The ground truth is the
simulator's state after ``truth_steps`` steps from the same pattern, minus the start. Reported:
|cos| between the two.

Baselines share the Langevin term and replace v by
- ``random``: a random (not skew) 1 x 1 kernel applied to the score, unit Frobenius norm;
- ``reweight``: the score network with every weight tensor redrawn from a normal with that
  tensor's own mean and std; its output is rescaled per image to the norm of ``D s`` for a
  unit-Frobenius 1 x 1 kernel on C channels (|s| / sqrt(C)), so only its direction differs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from eqflow.dynamics.integrators import NoiseStreams, sde_heun
from eqflow.metrics.fidelity import abs_cosine
from eqflow.models.baselines import (
    StackedNetworks,
    matched_norm,
    random_kernel_drift,
    random_kernels,
    redrawn_network,
)
from eqflow.protocols.langevin import Field, SDERecord, fork, langevin_representation, skip_draws
from eqflow.protocols.start_patterns import StartPatterns
from eqflow.protocols.table2_results import PatternFidelity, StartFidelity


@dataclass
class StartPlan:
    """Everything random about one start of the protocol, drawn in the order in which the
    one-start protocol draws it: the start pattern, then the noise of the flow's SDE (+D, run
    ``steps``), of -D, the random kernels and their noise, the redrawn networks and their noise.
    Each SDE's noise is a generator forked at the point its run would begin, so runs batched
    together see the same noise as runs made one after the other."""

    x0: torch.Tensor  # (1, C, H, W)
    truth: torch.Tensor  # simulator change, (1, C, H, W)
    plus: torch.Generator
    minus: torch.Generator
    kernels: torch.Tensor  # (n_draws, C, C)
    random: torch.Generator
    networks: list[torch.nn.Module]  # empty without the re-weight baseline
    reweight: torch.Generator | None


def plan_start(
    flow,
    simulator_step: Callable[[torch.Tensor, int], torch.Tensor],
    x0: torch.Tensor,
    generator: torch.Generator,
    *,
    steps: int,
    ema_until: int,
    truth_steps: int,
    n_draws: int,
    reweight: bool,
) -> StartPlan:
    """Draw one start's randomness from ``generator`` (see :class:`StartPlan`)."""
    if x0.ndim != 4 or x0.shape[0] != 1:
        raise ValueError(f"a start is one pattern of shape (1, C, H, W), got {tuple(x0.shape)}")
    if not 0 < ema_until <= steps:
        raise ValueError(f"ema_until must lie in [1, steps={steps}], got {ema_until}")
    truth = simulator_step(x0, truth_steps) - x0
    if float(truth.abs().max()) == 0:
        raise ValueError(
            "the simulator leaves this pattern unchanged (a dead pattern?); "
            "pick a pattern that moves"
        )
    one, batch = tuple(x0.shape), (n_draws, *x0.shape[1:])

    def stream(n_steps: int, shape: tuple) -> torch.Generator:
        g = fork(generator)
        skip_draws(generator, n_steps, shape, x0.dtype)
        return g

    plus, minus = stream(steps, one), stream(ema_until, one)
    kernels = random_kernels(n_draws, x0.shape[1], generator)
    random = stream(ema_until, batch)
    networks, reweight_stream = [], None
    network = flow.score_model.network
    if reweight and network is not None:
        networks = [redrawn_network(network, generator) for _ in range(n_draws)]
        reweight_stream = stream(ema_until, batch)
    return StartPlan(x0, truth, plus, minus, kernels, random, networks, reweight_stream)


@dataclass(frozen=True)
class SDERows:
    """The rows of the batched Table 2 SDE for ``n`` starts: the starts' +D runs, their -D runs,
    their random-kernel draws (start by start, ``draws`` each) and, with ``reweight``, their
    redrawn-network draws. The one place that knows where each part lies."""

    n: int
    draws: int
    reweight: bool

    @property
    def plus(self) -> slice:
        return slice(0, self.n)

    @property
    def minus(self) -> slice:
        return slice(self.n, 2 * self.n)

    @property
    def flows(self) -> slice:
        return slice(0, 2 * self.n)

    @property
    def random(self) -> slice:
        return slice(2 * self.n, 2 * self.n + self.n * self.draws)

    @property
    def redrawn(self) -> slice:
        end = self.random.stop
        return slice(end, end + (self.n * self.draws if self.reweight else 0))

    def lay_out(self, plans: list[StartPlan]) -> tuple[torch.Tensor, NoiseStreams]:
        """The batch of start states in row order, and each part's noise streams."""
        x0 = torch.cat([p.x0 for p in plans])
        repeated = [p.x0.expand(self.draws, *p.x0.shape[1:]) for p in plans]
        parts = [x0, x0, *repeated]
        streams = [*(p.plus for p in plans), *(p.minus for p in plans), *(p.random for p in plans)]
        sizes = [1] * (2 * self.n) + [self.draws] * self.n
        if self.reweight:
            parts += repeated
            streams += [p.reweight for p in plans]
            sizes += [self.draws] * self.n
        return torch.cat(parts).clone(), NoiseStreams(streams, sizes)

    def truths(self, truth: torch.Tensor) -> torch.Tensor:
        """The starts' simulator changes (n, C, H, W) repeated to match the rows."""
        draws = truth.repeat_interleave(self.draws, 0)
        return torch.cat([truth, truth, draws, *([draws] if self.reweight else [])])

    def fidelities(self, cos: torch.Tensor) -> list[StartFidelity]:
        """Each start's |cos| values from one value a row."""
        plus, minus = cos[self.plus].tolist(), cos[self.minus].tolist()
        rand, rew = self.per_start(cos, self.random), self.per_start(cos, self.redrawn)
        return [StartFidelity(plus[i], minus[i], rand[i], rew[i]) for i in range(self.n)]

    def per_start(self, values: torch.Tensor, rows: slice) -> list[list[float]]:
        """A baseline part's values (one per row) as each start's list of draws."""
        if rows.stop == rows.start:
            return [[] for _ in range(self.n)]
        return values[rows].view(self.n, self.draws).tolist()


def run_starts(
    flow,
    plans: list[StartPlan],
    *,
    eta: float,
    dt: float,
    ema: float,
    ema_until: int,
    frame: Field | None = None,
    frame_every: int = 0,
) -> tuple[list[StartFidelity], SDERecord]:
    """Every SDE of ``plans`` as one batched SDE of ``ema_until`` steps (rows laid out by
    :class:`SDERows`), each part with its own noise stream. Returns each start's |cos| values
    and the first start's +D record (with ``frame(x)`` of its state every ``frame_every``
    steps)."""
    rows = SDERows(len(plans), len(plans[0].kernels), bool(plans[0].networks))
    batch, noise = rows.lay_out(plans)
    random_drift = random_kernel_drift(torch.cat([p.kernels for p in plans]))
    if rows.reweight:
        nets = StackedNetworks([net for p in plans for net in p.networks])
        reweight_drift = matched_norm(
            lambda x: flow.score_model.score(x, network=nets), batch.shape[1] ** -0.5
        )
    sign = torch.tensor([1.0] * rows.n + [-1.0] * rows.n).view(-1, 1, 1, 1)

    def drift(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = [
            flow.drift(x[rows.flows], s[rows.flows]) * sign.to(s),
            random_drift(x[rows.random], s[rows.random]),
        ]
        if rows.reweight:
            out.append(reweight_drift(x[rows.redrawn], s[rows.redrawn]))
        return torch.cat(out)

    rec = langevin_representation(
        drift,
        flow.score,
        batch,
        eta=eta,
        dt=dt,
        steps=ema_until,
        ema=ema,
        ema_until=ema_until,
        noise=noise,
        frame_every=frame_every,
        frame=None if frame is None else (lambda x: frame(x[:1])),
    )
    rep = rec.representation
    starts = rows.fidelities(abs_cosine(rep, rows.truths(torch.cat([p.truth for p in plans]))))
    return starts, SDERecord(rep[:1], rec.final[:1], rec.frames)


def continue_record(
    flow,
    plan: StartPlan,
    record: SDERecord,
    *,
    eta: float,
    dt: float,
    steps: int,
    done: int,
    frame: Field | None = None,
    frame_every: int = 0,
) -> SDERecord:
    """Run a start's +D SDE on from step ``done`` to ``steps`` (for display: the numbers are
    read at ``ema_until``), with its own noise stream, which continues where it stopped."""
    frames = list(record.frames)

    def watch(k: int, x: torch.Tensor) -> None:
        if frame_every and frame is not None and (done + k) % frame_every == 0:
            frames.append(frame(x).cpu())

    final = sde_heun(
        flow.drift,
        flow.score,
        record.final,
        dt,
        steps - done,
        eta,
        generator=plan.plus,
        callback=watch,
        drift_from_score=True,
    )
    return SDERecord(record.representation, final, frames)


def pattern_fidelity(
    flow,
    simulator_step: Callable[[torch.Tensor, int], torch.Tensor],
    x0: torch.Tensor | StartPatterns,
    *,
    n_starts: int | None = None,
    eta: float = 0.1,
    dt: float = 0.01,
    steps: int = 300,
    ema: float = 0.9,
    ema_until: int = 200,
    truth_steps: int = 20,
    n_draws: int = 10,
    generator: torch.Generator | None = None,
    frame_every: int = 0,
    reweight: bool = True,
    start_batch: int = 8,
    display: bool = True,
) -> PatternFidelity:
    """The Table 2 protocol for an image ``flow`` (``drift``, ``score``, ``score_model``)
    from the clean patterns ``x0`` (S, C, H, W) in model coordinates (each one start), or from
    ``n_starts`` patterns drawn from a :class:`StartPatterns` pool, each just before its start
    is planned (so the first start of S is the one-start measurement of the same seed).
    ``simulator_step(x, n)`` advances the ground-truth system ``n`` steps in the same
    coordinates. Starts are planned one after the other from ``generator``, then run
    ``start_batch`` at a time as one batched SDE; with ``display``, the first start's +D run goes
    on to ``steps`` and keeps a frame every ``frame_every`` steps."""
    plan_kw = dict(steps=steps, ema_until=ema_until, truth_steps=truth_steps, n_draws=n_draws)
    g = generator or torch.Generator()
    plans = _plan_starts(flow, simulator_step, x0, n_starts, g, reweight=reweight, **plan_kw)
    kw = dict(eta=eta, dt=dt, ema=ema, ema_until=ema_until)
    starts, first = [], None
    for i in range(0, len(plans), max(1, start_batch)):
        show = i == 0 and display and frame_every
        found, record = run_starts(
            flow,
            plans[i : i + start_batch],
            **kw,
            frame=flow.score_model.denoise if show else None,
            frame_every=frame_every if show else 0,
        )
        starts += found
        first = first or record
    if display and steps > ema_until:
        shown = dict(frame=flow.score_model.denoise, frame_every=frame_every)
        first = continue_record(
            flow, plans[0], first, eta=eta, dt=dt, steps=steps, done=ema_until, **shown
        )
    return PatternFidelity(starts, first, plans[0].truth, plans[0].x0)


def _plan_starts(
    flow,
    simulator_step: Callable[[torch.Tensor, int], torch.Tensor],
    x0: torch.Tensor | StartPatterns,
    n_starts: int | None,
    generator: torch.Generator,
    **plan_kw,
) -> list[StartPlan]:
    """One :class:`StartPlan` per pattern of ``x0`` (S, C, H, W), or per pattern drawn from a
    :class:`StartPatterns` pool (``n_starts`` of them), planned one after the other."""
    pool = isinstance(x0, StartPatterns)
    if not pool and x0.ndim != 4:
        raise ValueError(
            f"pattern_fidelity takes patterns of shape (S, C, H, W), got {tuple(x0.shape)}"
        )
    plans = []
    for i in range((n_starts or 1) if pool else len(x0)):
        start = x0.draw().to(flow.device) if pool else x0[i : i + 1]
        plans.append(plan_start(flow, simulator_step, start, generator, **plan_kw))
    return plans
