"""Fidelity of image dynamics to a pattern simulator (Table 2 protocol, PAPER_NOTES 6).

From one clean pattern x0, run the irreversible Langevin SDE ``dx = (v + eta s) dt +
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

from eqflow.dynamics.integrators import sde_heun
from eqflow.metrics.fidelity import abs_cosine
from eqflow.models.baselines import (StackedNetworks, matched_norm, random_kernel_drift,
                                     random_kernels, redrawn_network)
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
                            frame_every: int = 0, frame: Field | None = None) -> SDERecord:
    """Run the SDE for ``steps`` Heun steps from ``x0`` (B, C, H, W) with velocity
    ``drift(x, s)`` (``s`` the score at ``x``, computed once per evaluation); the representation is
    ``EMA_{ema_until} - x0`` per image, the EMA ``m_k = ema m_{k-1} + (1 - ema) x_k``, m_0 = x0.
    Every ``frame_every`` steps, ``frame(x)`` (e.g. the denoised x0_hat) is kept on the CPU."""
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
                     drift_from_score=True)
    return SDERecord(state["rep"], final, frames)


@dataclass
class PatternFidelity:
    """One Table 2 column: the flow (both signs) and the baselines' |cos| to the truth."""

    plus: float
    minus: float
    random: list[float]
    reweight: list[float]
    record: SDERecord
    truth: torch.Tensor

    @property
    def best(self) -> float:
        return max(self.plus, self.minus)

    def summary(self, prefix: str = "table2") -> dict:
        def stats(xs):
            t = torch.tensor(xs, dtype=torch.float64)
            return float(t.mean()), float(t.std()) if len(xs) > 1 else 0.0

        rm, rs = stats(self.random)
        wm, ws = stats(self.reweight) if self.reweight else (float("nan"), float("nan"))
        return {f"{prefix}/training_free": self.best, f"{prefix}/training_free_plus": self.plus,
                f"{prefix}/training_free_minus": self.minus, f"{prefix}/random_mean": rm,
                f"{prefix}/random_std": rs, f"{prefix}/reweight_mean": wm,
                f"{prefix}/reweight_std": ws, f"{prefix}/random_draws": self.random,
                f"{prefix}/reweight_draws": self.reweight}


def pattern_fidelity(flow, simulator_step: Callable[[torch.Tensor, int], torch.Tensor],
                     x0: torch.Tensor, *, eta: float = 0.1, dt: float = 0.01, steps: int = 300,
                     ema: float = 0.9, ema_until: int = 200, truth_steps: int = 20,
                     n_draws: int = 10, generator: torch.Generator | None = None,
                     frame_every: int = 0, reweight: bool = True) -> PatternFidelity:
    """The Table 2 protocol for a training-free ``flow`` (``apply_D``, ``score``, ``score_model``)
    on one clean
    pattern ``x0`` (1, C, H, W) in model coordinates. ``simulator_step(x, n)`` advances the
    ground-truth system ``n`` steps in the same coordinates."""
    if x0.ndim != 4 or x0.shape[0] != 1:
        raise ValueError(f"pattern_fidelity takes one pattern of shape (1, C, H, W), got "
                         f"{tuple(x0.shape)}")
    truth = simulator_step(x0, truth_steps) - x0
    if float(truth.abs().max()) == 0:
        raise ValueError("the simulator leaves this pattern unchanged (a dead pattern?); "
                         "pick a pattern that moves")
    score_model = flow.score_model
    kw = dict(eta=eta, dt=dt, ema=ema, ema_until=ema_until, generator=generator)
    record = langevin_representation(lambda x, s: flow.apply_D(s), flow.score, x0, steps=steps,
                                     frame_every=frame_every, frame=score_model.denoise,
                                     **kw)
    minus = langevin_representation(lambda x, s: -flow.apply_D(s), flow.score, x0, steps=ema_until,
                                    **kw)
    plus_cos = float(abs_cosine(record.representation, truth)[0])
    minus_cos = float(abs_cosine(minus.representation, truth)[0])

    channels = x0.shape[1]
    batch = x0.expand(n_draws, *x0.shape[1:]).clone()
    kernels = random_kernels(n_draws, channels, generator or torch.Generator())
    rand = langevin_representation(random_kernel_drift(kernels), flow.score, batch,
                                   steps=ema_until, **kw)
    random_cos = abs_cosine(rand.representation, truth).tolist()

    reweight_cos: list[float] = []
    if reweight and score_model.network is not None:
        # one SDE over a batch of n_draws copies; copy i moves by its own redrawn network
        nets = StackedNetworks([redrawn_network(score_model.network, generator or torch.Generator())
                                for _ in range(n_draws)])

        def redrawn_field(x: torch.Tensor) -> torch.Tensor:
            return score_model.score(x, network=nets)

        rec = langevin_representation(matched_norm(redrawn_field, channels ** -0.5), flow.score,
                                      batch, steps=ema_until, **kw)
        reweight_cos = abs_cosine(rec.representation, truth).tolist()
    return PatternFidelity(plus_cos, minus_cos, random_cos, reweight_cos, record, truth)



def pick_pattern(x: torch.Tensor, generator: torch.Generator, min_std: float = 0.02) -> torch.Tensor:
    """One pattern (1, C, H, W) drawn from those with spatial structure (std > ``min_std``)."""
    alive = (x.flatten(2).std(-1).amax(-1) > min_std).nonzero().flatten()
    if not len(alive):
        raise ValueError(f"every pattern is flat (std <= {min_std}); the simulation died out. "
                         f"Use a larger data.size or fewer data.steps")
    return x[alive[torch.randint(len(alive), (1,), generator=generator)]]


class Patterns(Protocol):
    """Table 2 for image data with a simulator (PAPER_NOTES 6): the flow run as the irreversible
    Langevin SDE from one clean pattern against the simulator from the same pattern, beside
    the random-kernel and redrawn-network baselines; the Figure 3 panels and a GIF of the
    denoised SDE frames. Nothing for data without a simulator."""

    name = "patterns"

    def __init__(self, eta: float = 0.1, dt: float = 0.01, steps: int = 300, ema: float = 0.9,
                 ema_until: int = 200, truth_steps: int = 20, n_draws: int = 10,
                 frame_every: int = 5, channel: int = 1):
        self.eta, self.dt, self.steps, self.ema, self.ema_until = eta, dt, steps, ema, ema_until
        self.truth_steps, self.n_draws = truth_steps, n_draws
        self.frame_every, self.channel = frame_every, channel

    def measure(self, flow, data, generator, figures: Path | None) -> Measurement:
        simulate = data.simulator()
        if simulate is None:
            log.info("Patterns: %s has no simulator; skipped", type(data.system).__name__)
            return Measurement()
        x0 = pick_pattern(data.x, generator).to(flow.device)
        res = pattern_fidelity(flow, simulate, x0, eta=self.eta, dt=self.dt, steps=self.steps,
                               ema=self.ema, ema_until=self.ema_until,
                               truth_steps=self.truth_steps, n_draws=self.n_draws,
                               generator=generator, frame_every=self.frame_every)
        out = Measurement(res.summary())
        if figures is None:
            return out
        evolved = res.record.frames[-1][0] if res.record.frames else res.record.final[0]
        panels = {"initial": x0[0], f"training-free flow, {self.steps} SDE steps (x0_hat)": evolved,
                  f"simulator, {self.steps} steps": simulate(x0, self.steps)[0],
                  f"change under the flow (EMA, step {self.ema_until})": res.record.representation[0],
                  f"change under the simulator ({self.truth_steps} steps)": res.truth[0]}
        out.figures["figures/patterns"] = plots.pattern_panels(
            panels, figures / "patterns.png", f"|cos| = {res.best:.3f}", channel=self.channel)
        if res.record.frames:
            out.videos["figures/sde"] = plots.animation([f[0] for f in res.record.frames],
                                                        figures / "sde.gif", channel=self.channel)
        return out
