"""Fidelity of image dynamics to a pattern simulator (Table 2 protocol, docs/method.md §6).

From a clean pattern x0 (a start; the published protocol uses one, ``n_starts`` more), run the irreversible Langevin SDE ``dx = (v + eta s) dt +
sqrt(2 eta) dW`` by Heun's method; the representation is the EMA of the trajectory at step
``ema_until`` minus x0. The ground truth is the simulator's state after ``truth_steps`` steps
from the same pattern, minus the start. Reported: |cos| between the two.

Baselines share the Langevin term and replace v by
- ``random``: a random (not skew) 1 x 1 kernel applied to the score, unit Frobenius norm;
- ``reweight``: the score network with every weight tensor redrawn from a normal with that
  tensor's own mean and std; its output is rescaled per image to the norm of ``D s`` for a
  unit-Frobenius 1 x 1 kernel on C channels (|s| / sqrt(C)), so only its direction differs.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from eqflow import plots
from eqflow.dynamics.integrators import NoiseStreams, sde_heun
from eqflow.metrics.fidelity import abs_cosine
from eqflow.metrics.paired import paired_comparison
from eqflow.models.baselines import (
    StackedNetworks,
    matched_norm,
    random_kernel_drift,
    random_kernels,
    redrawn_network,
)
from eqflow.protocols.base import Measurement, Protocol

log = logging.getLogger(__name__)

Field = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SDERecord:
    """What one SDE run leaves: the EMA representation and frames for display."""

    representation: torch.Tensor
    final: torch.Tensor
    frames: list[torch.Tensor] = field(default_factory=list)


ScoreDrift = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def langevin_representation(drift: ScoreDrift, score: Field, x0: torch.Tensor, *, eta: float, dt: float,
                            steps: int, ema: float, ema_until: int,
                            generator: torch.Generator | None = None,
                            noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
                            frame_every: int = 0, frame: Field | None = None) -> SDERecord:
    """Run the SDE for ``steps`` Heun steps from ``x0`` (B, C, H, W) with velocity
    ``drift(x, s)`` (``s`` the score at ``x``, computed once per evaluation); the representation is
    ``EMA_{ema_until} - x0`` per image, the EMA ``m_k = ema m_{k-1} + (1 - ema) x_k``, m_0 = x0.
    Every ``frame_every`` steps, ``frame(x)`` (e.g. the denoised x0_hat) is kept on the CPU.
    The noise comes from ``generator``, or from ``noise(x)`` (see :class:`NoiseStreams`)."""
    if not 0 < ema_until <= steps:
        raise ValueError(f"ema_until must lie in [1, steps={steps}], got {ema_until}")
    state = {"ema": x0.clone(), "rep": None}
    frames = [frame(x0).cpu()] if frame_every and frame is not None else []

    def watch(k: int, x: torch.Tensor) -> None:
        if k <= ema_until:
            state["ema"].mul_(ema).add_(x, alpha=1 - ema)
            if k == ema_until:
                state["rep"] = state["ema"] - x0
        if frame_every and frame is not None and k % frame_every == 0:
            frames.append(frame(x).cpu())

    final = sde_heun(drift, score, x0, dt, steps, eta, generator=generator, callback=watch,
                     drift_from_score=True, noise=noise)
    return SDERecord(state["rep"], final, frames)


def fork(generator: torch.Generator) -> torch.Generator:
    """A new generator in ``generator``'s present state."""
    out = torch.Generator(device=generator.device)
    out.set_state(generator.get_state())
    return out


def skip_draws(generator: torch.Generator, steps: int, shape: tuple, dtype: torch.dtype) -> None:
    """Advance ``generator`` past ``steps`` normal draws of ``shape`` (what an SDE run takes)."""
    for _ in range(steps):
        torch.randn(shape, generator=generator, dtype=dtype, device=generator.device)


@dataclass
class StartPlan:
    """Everything random about one start of the protocol, drawn in the order in which the
    one-start protocol draws it: the start pattern, then the noise of the flow's SDE (+D, run
    ``steps``), of -D, the random kernels and their noise, the redrawn networks and their noise.
    Each SDE's noise is a generator forked at the point its run would begin, so runs batched
    together see the same noise as runs made one after the other."""

    x0: torch.Tensor                 # (1, C, H, W)
    truth: torch.Tensor              # simulator change, (1, C, H, W)
    plus: torch.Generator
    minus: torch.Generator
    kernels: torch.Tensor            # (n_draws, C, C)
    random: torch.Generator
    networks: list[torch.nn.Module]  # empty without the re-weight baseline
    reweight: torch.Generator | None


@dataclass
class StartFidelity:
    """One start's |cos| to the simulator: the flow with +D and -D, and each baseline draw."""

    plus: float
    minus: float
    random: list[float]
    reweight: list[float]

    def as_dict(self) -> dict:
        return {"plus": self.plus, "minus": self.minus, "random": self.random,
                "reweight": self.reweight}


BASELINES = {"random": "random", "reweight": "random re-weight"}


@dataclass
class PatternFidelity:
    """Table 2 from S starts: per start, the flow (both signs) and the baselines' |cos| to the
    truth; ``record`` and ``truth`` are the first start's (for the figures). The sign of D is a
    property of the flow, so it is chosen once: the sign with the higher mean over starts (with
    one start, the better of the two, as published)."""

    starts: list[StartFidelity]
    record: SDERecord
    truth: torch.Tensor
    x0: torch.Tensor | None = None  # the first start pattern

    @property
    def plus(self) -> float:
        return sum(s.plus for s in self.starts) / len(self.starts)

    @property
    def minus(self) -> float:
        return sum(s.minus for s in self.starts) / len(self.starts)

    @property
    def sign(self) -> str:
        return "+" if self.plus >= self.minus else "-"

    @property
    def per_start(self) -> list[float]:
        """The training-free value of each start, with the chosen sign."""
        return [s.plus if self.sign == "+" else s.minus for s in self.starts]

    @property
    def random(self) -> list[float]:
        return [v for s in self.starts for v in s.random]

    @property
    def reweight(self) -> list[float]:
        return [v for s in self.starts for v in s.reweight]

    def summary(self, prefix: str = "table2") -> dict:
        def stats(xs):
            t = torch.tensor(xs, dtype=torch.float64)
            return float(t.mean()), float(t.std()) if len(xs) > 1 else 0.0

        tf = self.per_start
        tf_mean, tf_std = stats(tf)
        rm, rs = stats(self.random)
        wm, ws = stats(self.reweight) if self.reweight else (float("nan"), float("nan"))
        out = {f"{prefix}/n_starts": len(self.starts), f"{prefix}/training_free": tf_mean,
               f"{prefix}/training_free_std": tf_std, f"{prefix}/training_free_plus": self.plus,
               f"{prefix}/training_free_minus": self.minus, f"{prefix}/sign": self.sign,
               f"{prefix}/random_mean": rm, f"{prefix}/random_std": rs,
               f"{prefix}/reweight_mean": wm, f"{prefix}/reweight_std": ws,
               f"{prefix}/random_draws": self.random, f"{prefix}/reweight_draws": self.reweight,
               f"{prefix}/starts": [s.as_dict() for s in self.starts]}
        for key in BASELINES:
            draws = [getattr(s, key) for s in self.starts]
            if all(draws):
                cmp = paired_comparison(tf, draws)
                out |= {f"{prefix}/{key}_beaten_share": cmp.share_beaten,
                        f"{prefix}/{key}_difference": cmp.mean_difference,
                        f"{prefix}/{key}_difference_ci_low": cmp.ci_low,
                        f"{prefix}/{key}_difference_ci_high": cmp.ci_high,
                        f"{prefix}/{key}_verdict": cmp.verdict}
        return out


def plan_start(flow, simulator_step: Callable[[torch.Tensor, int], torch.Tensor],
               x0: torch.Tensor, generator: torch.Generator, *, steps: int, ema_until: int,
               truth_steps: int, n_draws: int, reweight: bool) -> StartPlan:
    """Draw one start's randomness from ``generator`` (see :class:`StartPlan`)."""
    if x0.ndim != 4 or x0.shape[0] != 1:
        raise ValueError(f"a start is one pattern of shape (1, C, H, W), got {tuple(x0.shape)}")
    if not 0 < ema_until <= steps:
        raise ValueError(f"ema_until must lie in [1, steps={steps}], got {ema_until}")
    truth = simulator_step(x0, truth_steps) - x0
    if float(truth.abs().max()) == 0:
        raise ValueError("the simulator leaves this pattern unchanged (a dead pattern?); "
                         "pick a pattern that moves")
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


def run_starts(flow, plans: list[StartPlan], *, eta: float, dt: float, ema: float,
               ema_until: int, frame: Field | None = None,
               frame_every: int = 0) -> tuple[list[StartFidelity], SDERecord]:
    """Every SDE of ``plans`` as one batched SDE of ``ema_until`` steps: rows are the starts'
    +D runs, their -D runs, their random-kernel draws and their redrawn-network draws, each
    part with its own noise stream. Returns each start's |cos| values and the first start's
    +D record (with ``frame(x)`` of its state every ``frame_every`` steps)."""
    n = len(plans)
    draws = len(plans[0].kernels)
    reweight = bool(plans[0].networks)
    x0 = torch.cat([p.x0 for p in plans])
    parts = [x0, x0, *(p.x0.expand(draws, *p.x0.shape[1:]) for p in plans)]
    streams = [*(p.plus for p in plans), *(p.minus for p in plans), *(p.random for p in plans)]
    sizes = [1] * (2 * n) + [draws] * n
    if reweight:
        parts += [p.x0.expand(draws, *p.x0.shape[1:]) for p in plans]
        streams += [p.reweight for p in plans]
        sizes += [draws] * n
    batch = torch.cat(parts).clone()
    kernels = torch.cat([p.kernels for p in plans])
    random_drift = random_kernel_drift(kernels)
    channels = batch.shape[1]
    if reweight:
        nets = StackedNetworks([net for p in plans for net in p.networks])
        reweight_drift = matched_norm(
            lambda x: flow.score_model.score(x, network=nets), channels ** -0.5)
    flows, rand_end = slice(0, 2 * n), 2 * n + n * draws
    sign = torch.tensor([1.0] * n + [-1.0] * n).view(-1, 1, 1, 1)

    def drift(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        out = [flow.apply_D(s[flows]) * sign.to(s),
               random_drift(x[2 * n:rand_end], s[2 * n:rand_end])]
        if reweight:
            out.append(reweight_drift(x[rand_end:], s[rand_end:]))
        return torch.cat(out)

    rec = langevin_representation(drift, flow.score, batch, eta=eta, dt=dt, steps=ema_until,
                                  ema=ema, ema_until=ema_until, noise=NoiseStreams(streams, sizes),
                                  frame_every=frame_every,
                                  frame=None if frame is None else (lambda x: frame(x[:1])))
    truth = torch.cat([p.truth for p in plans])
    rep = rec.representation
    plus = abs_cosine(rep[:n], truth).tolist()
    minus = abs_cosine(rep[n:2 * n], truth).tolist()
    rand = abs_cosine(rep[2 * n:rand_end], truth.repeat_interleave(draws, 0)).view(n, draws)
    rew = (abs_cosine(rep[rand_end:], truth.repeat_interleave(draws, 0)).view(n, draws).tolist()
           if reweight else [[] for _ in range(n)])
    starts = [StartFidelity(plus[i], minus[i], rand[i].tolist(), rew[i]) for i in range(n)]
    first = SDERecord(rep[:1], rec.final[:1], rec.frames)
    return starts, first


def continue_record(flow, plan: StartPlan, record: SDERecord, *, eta: float, dt: float,
                    steps: int, done: int, frame: Field | None = None,
                    frame_every: int = 0) -> SDERecord:
    """Run a start's +D SDE on from step ``done`` to ``steps`` (for display: the numbers are
    read at ``ema_until``), with its own noise stream, which continues where it stopped."""
    frames = list(record.frames)

    def watch(k: int, x: torch.Tensor) -> None:
        if frame_every and frame is not None and (done + k) % frame_every == 0:
            frames.append(frame(x).cpu())

    final = sde_heun(lambda x, s: flow.apply_D(s), flow.score, record.final, dt, steps - done,
                     eta, generator=plan.plus, callback=watch, drift_from_score=True)
    return SDERecord(record.representation, final, frames)


def pattern_fidelity(flow, simulator_step: Callable[[torch.Tensor, int], torch.Tensor],
                     x0: torch.Tensor | StartPatterns, *, n_starts: int | None = None,
                     eta: float = 0.1, dt: float = 0.01, steps: int = 300, ema: float = 0.9,
                     ema_until: int = 200, truth_steps: int = 20,
                     n_draws: int = 10, generator: torch.Generator | None = None,
                     frame_every: int = 0, reweight: bool = True,
                     start_batch: int = 8, display: bool = True) -> PatternFidelity:
    """The Table 2 protocol for a training-free ``flow`` (``apply_D``, ``score``, ``score_model``)
    from the clean patterns ``x0`` (S, C, H, W) in model coordinates (each one start), or from
    ``n_starts`` patterns drawn from a :class:`StartPatterns` pool, each just before its start
    is planned (so the first start of S is the one-start measurement of the same seed).
    ``simulator_step(x, n)`` advances the ground-truth system ``n`` steps in the same
    coordinates. Starts are planned one after the other from ``generator``, then run
    ``start_batch`` at a time as one batched SDE; with ``display``, the first start's +D run goes
    on to ``steps`` and keeps a frame every ``frame_every`` steps."""
    pool = isinstance(x0, StartPatterns)
    if not pool and x0.ndim != 4:
        raise ValueError(f"pattern_fidelity takes patterns of shape (S, C, H, W), got "
                         f"{tuple(x0.shape)}")
    generator = generator or torch.Generator()
    score_model = flow.score_model
    plans = []
    for i in range((n_starts or 1) if pool else len(x0)):
        start = x0.draw().to(flow.device) if pool else x0[i:i + 1]
        plans.append(plan_start(flow, simulator_step, start, generator, steps=steps,
                                ema_until=ema_until, truth_steps=truth_steps, n_draws=n_draws,
                                reweight=reweight))
    kw = dict(eta=eta, dt=dt, ema=ema, ema_until=ema_until)
    starts, first = [], None
    for i in range(0, len(plans), max(1, start_batch)):
        show = i == 0 and display and frame_every
        found, record = run_starts(flow, plans[i:i + start_batch], **kw,
                                   frame=score_model.denoise if show else None,
                                   frame_every=frame_every if show else 0)
        starts += found
        first = first or record
    if display and steps > ema_until:
        first = continue_record(flow, plans[0], first, eta=eta, dt=dt, steps=steps,
                                done=ema_until, frame=score_model.denoise,
                                frame_every=frame_every)
    return PatternFidelity(starts, first, plans[0].truth, plans[0].x0)


class StartPatterns:
    """Start patterns drawn one at a time, without replacement, from those of ``x`` (N, C, H, W)
    with spatial structure (std > ``min_std``): ``draw()`` -> (1, C, H, W)."""

    def __init__(self, x: torch.Tensor, generator: torch.Generator, min_std: float = 0.02):
        self.x, self.generator = x, generator
        self.alive = (x.flatten(2).std(-1).amax(-1) > min_std).nonzero().flatten().tolist()
        if not self.alive:
            raise ValueError(f"every pattern is flat (std <= {min_std}); the simulation died out. "
                             f"Use a larger data.size or fewer data.steps")
        self.n_alive = len(self.alive)

    def draw(self) -> torch.Tensor:
        if not self.alive:
            raise ValueError(f"more start patterns asked for than the {self.n_alive} patterns with "
                             f"structure; lower callbacks.patterns.n_starts or raise data.n_samples")
        i = self.alive.pop(int(torch.randint(len(self.alive), (1,), generator=self.generator)))
        return self.x[i:i + 1]


def pick_patterns(x: torch.Tensor, n: int, generator: torch.Generator,
                  min_std: float = 0.02) -> torch.Tensor:
    """``n`` different patterns (n, C, H, W) with structure (see :class:`StartPatterns`)."""
    pool = StartPatterns(x, generator, min_std)
    return torch.cat([pool.draw() for _ in range(n)])


def pick_pattern(x: torch.Tensor, generator: torch.Generator, min_std: float = 0.02) -> torch.Tensor:
    """One pattern (1, C, H, W) drawn from those with spatial structure (std > ``min_std``)."""
    return pick_patterns(x, 1, generator, min_std)


class Patterns(Protocol):
    """Table 2 for image data with a simulator (docs/method.md §6): the flow run as the irreversible
    Langevin SDE from ``n_starts`` clean patterns (the published protocol: one) against the
    simulator from the same patterns, beside the random-kernel and redrawn-network baselines,
    with the paired statistics over starts (:mod:`eqflow.metrics.paired`); the Figure 3 panels
    and a GIF of the denoised SDE frames of the first start. Nothing for data without a
    simulator. ``start_batch`` starts run as one batched SDE (memory grows with it)."""

    name = "patterns"

    def __init__(self, eta: float = 0.1, dt: float = 0.01, steps: int = 300, ema: float = 0.9,
                 ema_until: int = 200, truth_steps: int = 20, n_draws: int = 10,
                 frame_every: int = 5, channel: int = 1, n_starts: int = 1,
                 start_batch: int = 8):
        if n_starts < 1 or start_batch < 1:
            raise ValueError(f"callbacks.patterns.n_starts={n_starts} and start_batch={start_batch} "
                             f"must be at least 1")
        self.eta, self.dt, self.steps, self.ema, self.ema_until = eta, dt, steps, ema, ema_until
        self.truth_steps, self.n_draws = truth_steps, n_draws
        self.frame_every, self.channel = frame_every, channel
        self.n_starts, self.start_batch = n_starts, start_batch

    def measure(self, flow, data, generator, figures: Path | None) -> Measurement:
        simulate = data.simulator()
        if simulate is None:
            log.info("Patterns: %s has no simulator; skipped", type(data.system).__name__)
            return Measurement()
        res = pattern_fidelity(flow, simulate, StartPatterns(data.x, generator),
                               n_starts=self.n_starts, eta=self.eta, dt=self.dt, steps=self.steps,
                               ema=self.ema, ema_until=self.ema_until,
                               truth_steps=self.truth_steps, n_draws=self.n_draws,
                               generator=generator, frame_every=self.frame_every,
                               start_batch=self.start_batch, display=figures is not None)
        out = Measurement(res.summary())
        if figures is None:
            return out
        evolved = res.record.frames[-1][0] if res.record.frames else res.record.final[0]
        x0 = res.x0
        panels = {"initial": x0[0], f"training-free flow, {self.steps} SDE steps (x0_hat)": evolved,
                  f"simulator, {self.steps} steps": simulate(x0[:1], self.steps)[0],
                  f"change under the flow (EMA, step {self.ema_until})": res.record.representation[0],
                  f"change under the simulator ({self.truth_steps} steps)": res.truth[0]}
        out.figures["figures/patterns"] = plots.pattern_panels(
            panels, figures / "patterns.png", f"|cos| = {res.per_start[0]:.3f}", channel=self.channel)
        if res.record.frames:
            out.videos["figures/sde"] = plots.animation([f[0] for f in res.record.frames],
                                                        figures / "sde.gif", channel=self.channel)
        return out
