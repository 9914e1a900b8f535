"""The Table 2 protocol for image data with a simulator (the computation is
:mod:`eqflow.protocols.table2`)."""

from __future__ import annotations

import logging
from pathlib import Path

from eqflow import plots
from eqflow.dynamics.stiffness import SUBSTEP_TOLERANCE
from eqflow.protocols.base import Measurement, Protocol
from eqflow.protocols.langevin import flow_content_share, flow_stiffness, flow_translation_share
from eqflow.protocols.start_patterns import StartPatterns
from eqflow.protocols.table2 import pattern_fidelity

log = logging.getLogger(__name__)


class Patterns(Protocol):
    """Table 2 for image data with a simulator (docs/method.md §6): the flow run as the irreversible
    Langevin SDE from ``n_starts`` clean patterns (the published protocol: one) against the
    simulator from the same patterns, beside the random-kernel and redrawn-network baselines,
    with the paired statistics over starts (:mod:`eqflow.metrics.paired`); the Figure 3 panels
    and a GIF of the denoised SDE frames of the first start. Nothing for data without a
    simulator. ``start_batch`` starts run as one batched SDE (memory grows with it)."""

    name = "patterns"

    def __init__(
        self,
        eta: float = 0.1,
        dt: float = 0.01,
        steps: int = 300,
        ema: float = 0.9,
        ema_until: int = 200,
        truth_steps: int = 20,
        n_draws: int = 10,
        frame_every: int = 5,
        channel: int = 1,
        n_starts: int = 1,
        start_batch: int = 8,
    ):
        if n_starts < 1 or start_batch < 1:
            raise ValueError(
                f"measure.patterns.n_starts={n_starts} and start_batch={start_batch} "
                f"must be at least 1"
            )
        self.eta, self.dt, self.steps, self.ema, self.ema_until = eta, dt, steps, ema, ema_until
        self.truth_steps, self.n_draws = truth_steps, n_draws
        self.frame_every, self.channel = frame_every, channel
        self.n_starts, self.start_batch = n_starts, start_batch

    def measure(self, flow, data, generator, figures: Path | None) -> Measurement:
        simulate = data.simulator()
        if simulate is None:
            log.info("Patterns: %s has no simulator; skipped", type(data.system).__name__)
            return Measurement()
        res = pattern_fidelity(
            flow,
            simulate,
            StartPatterns(data.x, generator),
            n_starts=self.n_starts,
            eta=self.eta,
            dt=self.dt,
            steps=self.steps,
            ema=self.ema,
            ema_until=self.ema_until,
            truth_steps=self.truth_steps,
            n_draws=self.n_draws,
            generator=generator,
            frame_every=self.frame_every,
            start_batch=self.start_batch,
            display=figures is not None,
        )
        out = Measurement(res.summary())
        # the share of the field a rigid translation explains, on training patterns
        out.values["table2/flow_translation_share"] = flow_translation_share(flow, data.x[:16])
        out.values["table2/flow_content_share"] = flow_content_share(flow, data.x[:16])
        # (8 patterns: the learned operator's stiffness varies little between them, and reading
        # it costs 40 passes of the coefficient network over each)
        self.check_step(out, flow_stiffness(flow, data.x[:8], self.eta, self.dt, substeps=1))
        if figures is None:
            return out
        evolved = res.record.frames[-1][0] if res.record.frames else res.record.final[0]
        x0 = res.x0
        panels = {
            "initial": x0[0],
            f"training-free flow, {self.steps} SDE steps (x0_hat)": evolved,
            f"simulator, {self.steps} steps": simulate(x0[:1], self.steps)[0],
            f"change under the flow (EMA, step {self.ema_until})": res.record.representation[0],
            f"change under the simulator ({self.truth_steps} steps)": res.truth[0],
        }
        out.figures["figures/patterns"] = plots.pattern_panels(
            panels,
            figures / "patterns.png",
            f"|cos| = {res.per_start[0]:.3f}",
            channel=self.channel,
        )
        if res.record.frames:
            out.videos["figures/sde"] = plots.animation(
                [f[0] for f in res.record.frames], figures / "sde.gif", channel=self.channel
            )
        return out

    def check_step(self, out: Measurement, stiffness: dict) -> None:
        """Record how far one Heun step of ``dt`` amplifies the flow's stiffest mode beyond the
        SDE's own damping (``table2/heun_excess``), and warn where it leaks."""
        out.values.update({f"table2/{k}": v for k, v in stiffness.items() if k != "heun_substeps"})
        excess = stiffness.get("heun_excess", 1.0)
        if excess > 1 + SUBSTEP_TOLERANCE:
            log.warning(
                "Table 2's Heun step amplifies the flow's stiffest mode %.3g times more than the "
                "SDE damps it (spectral radius %.3g): the scheme, not the flow, moves the "
                "density; lower measure.patterns.dt",
                excess,
                stiffness["drift_stiffness"],
            )
