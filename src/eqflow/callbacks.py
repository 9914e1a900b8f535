"""Lightning callbacks that measure a flow at the end of fit: MMD over time, the largest
Lyapunov exponent, cosine fidelity to a ground-truth field, and the figures.

Each one writes its numbers into ``<output_dir>/metrics.json`` and logs them to every logger.
They see the flow through ``velocity(x)`` and the data through the datamodule, so they work
for learned and training-free flows alike.
"""
from __future__ import annotations

import copy
import logging
import time
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch

from eqflow import plots
from eqflow.data.base import random_subset
from eqflow.dynamics.integrators import integrate_ode
from eqflow.metrics.fidelity import aligned_abs_cosine, representation
from eqflow.metrics.lyapunov import REST_SPEED, max_lyapunov
from eqflow.metrics.mmd import mmd2, mmd_over_time
from eqflow.metrics.patterns import pattern_fidelity
from eqflow.results import log_figure, log_to_loggers, log_video, update_metrics

log = logging.getLogger(__name__)


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


class EndOfFitMetric(pl.Callback):
    """Base: run :meth:`measure` once when fit ends, with the flow in eval mode."""

    name = "metric"

    def __init__(self, output_dir: str, seed: int = 0, enabled: bool = True):
        self.output_dir = Path(output_dir)
        self.seed = seed
        self.enabled = enabled

    def generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(int(self.seed))

    def measure(self, trainer, flow, datamodule) -> dict:  # pragma: no cover - overridden
        return {}

    def record(self, trainer, values: dict) -> None:
        update_metrics(self.output_dir, values)
        log_to_loggers(trainer.loggers, values, step=trainer.global_step)

    def figure(self, trainer, key: str, path: Path) -> None:
        log_figure(trainer.loggers, key, path)
        log.info("Figure %s written to %s", key, path)

    def on_fit_end(self, trainer, pl_module) -> None:
        if not self.enabled or trainer.global_rank != 0:
            return
        was_training = pl_module.training
        pl_module.eval()
        start = time.perf_counter()
        with torch.no_grad():
            values = self.measure(trainer, pl_module, trainer.datamodule)
        if values:
            values[f"time/{self.name}_s"] = time.perf_counter() - start
            self.record(trainer, values)
        pl_module.train(was_training)


class MMDCallback(EndOfFitMetric):
    """Distribution preservation (PAPER_NOTES 6, Appendix B): start from ``n_points`` samples of
    the noised data the flow preserves, integrate with RK4, MMD^2 to the start set at each step.
    The pure score flow dx/dt = s(x) from the same points is the reference that drifts."""

    name = "mmd"

    def __init__(self, output_dir: str, n_points: int = 256, dt: float = 0.1, steps: int = 100,
                 bandwidth: float = 0.5, score_baseline: bool = True, **kw):
        super().__init__(output_dir, **kw)
        self.n_points, self.dt, self.steps = n_points, dt, steps
        self.bandwidth, self.score_baseline = bandwidth, score_baseline

    def measure(self, trainer, flow, datamodule) -> dict:
        g = self.generator()
        x = datamodule.x.to(flow.device)
        start = flow.score_model.noise(random_subset(x, self.n_points, g).to(flow.device), g)
        other = flow.score_model.noise(random_subset(x, self.n_points, g).to(flow.device), g)
        curves = {"flow": mmd_over_time(integrate_ode(flow.velocity, start, self.dt, self.steps),
                                        self.bandwidth)}
        if self.score_baseline:
            curves["score flow"] = mmd_over_time(
                integrate_ode(flow.score, start, self.dt, self.steps), self.bandwidth)
        floor = float(mmd2(start, other, self.bandwidth))
        times = [self.dt * k for k in range(self.steps + 1)]
        path = plots.curves({k: v.cpu() for k, v in curves.items()},
                            self.output_dir / "figures" / "mmd.png", "time", "MMD^2 to start",
                            "Distribution preservation", x={k: times for k in curves})
        self.figure(trainer, "figures/mmd", path)
        values = {"mmd/final": float(curves["flow"][-1]), "mmd/curve": curves["flow"].cpu(),
                  "mmd/noise_floor": floor, "mmd/times": times}
        if "score flow" in curves:
            values["mmd/score_flow_final"] = float(curves["score flow"][-1])
            values["mmd/score_flow_curve"] = curves["score flow"].cpu()
        return values


class LyapunovCallback(EndOfFitMetric):
    """Largest Lyapunov exponent of the flow (float64 copy), raw and per unit distance.

    The defaults follow the tangent dynamics closely (a twin 1e-8 away, pulled back every step,
    after 500 steps of burn-in). The published estimator (PAPER_NOTES 6) is ``perturbation=1e-5,
    renorm_every=2500, burn_in=0``: a finite perturbation pulled back after each of 2 segments."""

    name = "lyapunov"

    def __init__(self, output_dir: str, n_trajectories: int = 8, dt: float = 0.1,
                 steps: int = 5000, burn_in: int = 500, bound: float | None = 4.0,
                 perturbation: float = 1e-8, renorm_every: int = 1, **kw):
        super().__init__(output_dir, **kw)
        self.n_trajectories, self.dt, self.steps, self.burn_in = n_trajectories, dt, steps, burn_in
        self.bound, self.perturbation, self.renorm_every = bound, perturbation, renorm_every

    def measure(self, trainer, flow, datamodule) -> dict:
        res = flow_lyapunov(flow, datamodule.x, self.n_trajectories, self.dt, self.steps,
                            self.burn_in, self.bound, self.generator(), self.perturbation,
                            self.renorm_every)
        if res["n_kept"] < res["n_total"]:
            log.warning("Lyapunov: %d of %d trajectories left |x| < %s and were dropped",
                        res["n_total"] - res["n_kept"], res["n_total"], self.bound)
        if res["n_at_rest"]:
            log.warning("Lyapunov: %d of %d trajectories came to rest on a fixed point of the flow "
                        "(mean speed < %g); a flow that preserves p has no attracting points",
                        res["n_at_rest"], res["n_kept"], REST_SPEED)
        return {"lyapunov/max": res["lyapunov"],
                "lyapunov/speed_normalised": res["lyapunov_speed_normalised"],
                "lyapunov/mean_speed": res["mean_speed"],
                "lyapunov/per_trajectory": res["per_trajectory"],
                "lyapunov/n_kept": res["n_kept"], "lyapunov/n_at_rest": res["n_at_rest"]}


class FidelityCallback(EndOfFitMetric):
    """|cos| between the flow's and the ground-truth field's representations on ``n_points``
    data points scaled by sqrt(alpha) (PAPER_NOTES 6). Skipped when the data has no field."""

    name = "fidelity"

    def __init__(self, output_dir: str, n_points: int = 1024, **kw):
        super().__init__(output_dir, **kw)
        self.n_points = n_points

    def measure(self, trainer, flow, datamodule) -> dict:
        truth = datamodule.true_field()
        if truth is None:
            return {}
        pts = random_subset(datamodule.x, self.n_points, self.generator()).to(flow.device)
        pts = pts * torch.sqrt(flow.alpha)
        ref = representation(truth, pts)
        return {"fidelity/cos_truth": aligned_abs_cosine(representation(flow.velocity, pts), ref),
                "fidelity/cos_truth_score": aligned_abs_cosine(representation(flow.score, pts), ref)}


class LossHistory(pl.Callback):
    """Keeps the epoch-mean training loss for the loss-curve figure."""

    def __init__(self, key: str = "train/loss"):
        self.key, self.values = key, []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        value = trainer.callback_metrics.get(self.key)
        if value is not None:
            self.values.append(float(value))

    # kept in checkpoints, so a resumed fit continues the curve instead of restarting it
    @property
    def state_key(self) -> str:
        return self._generate_state_key(key=self.key)

    def state_dict(self) -> dict:
        return {"values": list(self.values)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.values = list(state_dict["values"])


class TrainingClock(pl.Callback):
    """Seconds spent in fit, summed over every resumption (kept in checkpoints)."""

    def __init__(self):
        self.before, self._start = 0.0, None

    def on_train_start(self, trainer, pl_module) -> None:
        self._start = time.perf_counter()

    @property
    def seconds(self) -> float:
        running = time.perf_counter() - self._start if self._start is not None else 0.0
        return self.before + running

    def state_dict(self) -> dict:
        return {"seconds": self.seconds}

    def load_state_dict(self, state_dict: dict) -> None:
        self.before = float(state_dict["seconds"])


class FigureCallback(EndOfFitMetric):
    """The flow over the data (2-D quiver with trajectories, or 3-D trajectories) and the
    loss curves of the flow and of the score model."""

    name = "figures"

    def __init__(self, output_dir: str, n_trajectories: int = 8, dt: float = 0.05,
                 steps: int = 400, **kw):
        super().__init__(output_dir, **kw)
        self.n_trajectories, self.dt, self.steps = n_trajectories, dt, steps
        self.score_losses: list[float] = []

    def measure(self, trainer, flow, datamodule) -> dict:
        g = self.generator()
        x = datamodule.x
        start = flow.score_model.noise(random_subset(x, self.n_trajectories, g).to(flow.device), g)
        traj = integrate_ode(flow.velocity, start, self.dt, self.steps).cpu()
        shown = x * torch.sqrt(flow.alpha.cpu())
        title = f"{type(flow).__name__} on {type(datamodule.system).__name__}"
        figs = self.output_dir / "figures"
        if datamodule.dim == 2:
            self.figure(trainer, "figures/flow", plots.quiver_2d(
                lambda p: flow.velocity(p.to(flow.device)), shown, traj, figs / "quiver.png", title))
        elif datamodule.dim == 3:
            self.figure(trainer, "figures/flow", plots.trajectory_3d(traj, shown,
                                                                     figs / "trajectory_3d.png", title))
        history = next((c for c in trainer.callbacks if isinstance(c, LossHistory)), None)
        series = {}
        if history is not None and history.values:
            series["flow loss"] = history.values
        if self.score_losses:
            series["score loss"] = self.score_losses
        if series:
            self.figure(trainer, "figures/loss", plots.curves(series, figs / "loss.png", "epoch",
                                                              "loss", "Training loss", logy=True))
        return {}


def pick_pattern(x: torch.Tensor, generator: torch.Generator, min_std: float = 0.02) -> torch.Tensor:
    """One pattern (1, C, H, W) drawn from those with spatial structure (std > ``min_std``)."""
    alive = (x.flatten(2).std(-1).amax(-1) > min_std).nonzero().flatten()
    if not len(alive):
        raise ValueError(f"every pattern is flat (std <= {min_std}); the simulation died out. "
                         f"Use a larger data.size or fewer data.steps")
    return x[alive[torch.randint(len(alive), (1,), generator=generator)]]


class PatternFidelityCallback(EndOfFitMetric):
    """Table 2 for image data with a simulator (PAPER_NOTES 6): the flow run as the irreversible
    Langevin SDE from one clean pattern against the simulator from the same pattern, beside
    the random-kernel and redrawn-network baselines; the Figure 3 panels and a GIF of the
    denoised SDE frames."""

    name = "patterns"

    def __init__(self, output_dir: str, eta: float = 0.1, dt: float = 0.01, steps: int = 300,
                 ema: float = 0.9, ema_until: int = 200, truth_steps: int = 20, n_draws: int = 10,
                 frame_every: int = 5, channel: int = 1, **kw):
        super().__init__(output_dir, **kw)
        self.eta, self.dt, self.steps, self.ema, self.ema_until = eta, dt, steps, ema, ema_until
        self.truth_steps, self.n_draws = truth_steps, n_draws
        self.frame_every, self.channel = frame_every, channel

    def measure(self, trainer, flow, datamodule) -> dict:
        system = datamodule.system
        if not hasattr(system, "simulator"):
            log.info("PatternFidelityCallback: %s has no simulator; skipped", type(system).__name__)
            return {}
        g = self.generator()
        simulate = system.simulator(datamodule.snapshots)
        x0 = pick_pattern(datamodule.x, g).to(flow.device)
        res = pattern_fidelity(flow, simulate, x0, eta=self.eta, dt=self.dt, steps=self.steps,
                               ema=self.ema, ema_until=self.ema_until,
                               truth_steps=self.truth_steps, n_draws=self.n_draws, generator=g,
                               frame_every=self.frame_every)
        figs = self.output_dir / "figures"
        evolved = res.record.frames[-1][0] if res.record.frames else res.record.final[0]
        panels = {"initial": x0[0], f"training-free flow, {self.steps} SDE steps (x0_hat)": evolved,
                  f"simulator, {self.steps} steps": simulate(x0, self.steps)[0],
                  f"change under the flow (EMA, step {self.ema_until})": res.record.representation[0],
                  f"change under the simulator ({self.truth_steps} steps)": res.truth[0]}
        self.figure(trainer, "figures/patterns", plots.pattern_panels(
            panels, figs / "patterns.png", f"|cos| = {res.best:.3f}", channel=self.channel))
        if res.record.frames:
            gif = plots.animation([f[0] for f in res.record.frames], figs / "sde.gif",
                                  channel=self.channel)
            log_video(trainer.loggers, "figures/sde", gif)
            log.info("Animation written to %s", gif)
        return res.summary()


class ScoreSamples(pl.Callback):
    """Every ``every_n_epochs`` training epochs (and at the last one), draw ``n`` images from
    the score model by ancestral sampling and save them as a grid in ``output_dir``."""

    def __init__(self, output_dir: str, size: int, n: int = 8, every_n_epochs: int = 5,
                 seed: int = 0, channel: int | None = 1):
        self.output_dir, self.size, self.n = Path(output_dir), size, n
        self.every_n_epochs, self.seed, self.channel = every_n_epochs, seed, channel
        self.paths: list[Path] = []

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        epoch = trainer.current_epoch + 1
        last = epoch >= (trainer.max_epochs or 0)
        if trainer.global_rank != 0 or not (last or epoch % self.every_n_epochs == 0):
            return
        was_training = pl_module.training
        pl_module.eval()
        g = torch.Generator().manual_seed(self.seed)
        images = pl_module.sample(self.n, self.size, g)
        pl_module.train(was_training)
        path = plots.image_grid(images, self.output_dir / f"samples_epoch{epoch:04d}.png",
                                f"score-model samples, epoch {epoch}", channel=self.channel)
        self.paths.append(path)
        log.info("Score samples written to %s", path)


class CreatureCallback(EndOfFitMetric):
    """Artificial life (PAPER_NOTES 6): run the flow as the irreversible Langevin SDE on a canvas
    ``scale`` times the training canvas from uniform noise in [-1, 1], keep the denoised frames
    x0_hat smoothed by an EMA, find and track the creatures, and report their speeds and
    polarisation; a GIF (and MP4 where ffmpeg exists) with the tracks, and the Figure 5 panels.

    The EMA runs over the kept frames with decay ``ema ** frame_every``, the same smoothing
    per unit time as an EMA over every step.

    ``start``: ``noise`` (published: uniform in [-1, 1]) or ``data``: a ``scale`` x ``scale``
    mosaic of training scatters noised to the score's level, so the creatures exist from the
    first frame and the run shows how they move rather than how they form.

    Only blobs of a creature's size are tracked: ``area_range`` times the typical (area-weighted
    median) blob area of ``reference_images`` training scatters. ``creatures/count_ratio``
    compares the creatures found per frame with the training scatters' density on the larger
    canvas: near 1 when the flow keeps a population of icons, near 0 when it turns them into
    something else."""

    STARTS = ("noise", "data")

    name = "creatures"

    def __init__(self, output_dir: str, scale: int = 2, steps: int = 2000, dt: float = 0.05,
                 eta: float = 0.1, ema: float = 0.99, frame_every: int = 10,
                 threshold: float = 0.25, min_area: int = 4, max_step: float | None = None,
                 min_track_frames: int = 5, start: str = "noise",
                 area_range: tuple[float, float] | None = (0.5, 2.0), reference_images: int = 32,
                 **kw):
        super().__init__(output_dir, **kw)
        if start not in self.STARTS:
            raise ValueError(f"callbacks.creatures.start={start!r}: choose one of {self.STARTS}")
        if area_range is not None and not (len(area_range) == 2 and 0 <= area_range[0] < area_range[1]):
            raise ValueError(f"callbacks.creatures.area_range={area_range!r}: give [low, high] with "
                             f"0 <= low < high (multiples of a training creature's area), or null "
                             f"to count blobs of every size")
        self.start, self.area_range, self.reference_images = start, area_range, reference_images
        self.scale, self.steps, self.dt, self.eta, self.ema = scale, steps, dt, eta, ema
        self.frame_every, self.threshold, self.min_area = frame_every, threshold, min_area
        self.max_step, self.min_track_frames = max_step, min_track_frames

    def start_state(self, images: torch.Tensor, size: int, alpha: torch.Tensor,
                    g: torch.Generator) -> torch.Tensor:
        """The SDE's (1, C, size, size) start: uniform noise, or a mosaic of training images
        noised as x_t = sqrt(a) x0 + sqrt(1 - a) eps."""
        c, h, w = images.shape[1:]
        if self.start == "noise":
            return torch.rand(1, c, size, size, generator=g) * 2 - 1
        rows, cols = -(-size // h), -(-size // w)
        pick = torch.randint(0, len(images), (rows * cols,), generator=g)
        tiles = images[pick].float().cpu().reshape(rows, cols, c, h, w)
        mosaic = tiles.permute(2, 0, 3, 1, 4).reshape(c, rows * h, cols * w)[:, :size, :size]
        eps = torch.randn(mosaic.shape, generator=g)
        return (alpha.sqrt() * mosaic + (1 - alpha).sqrt() * eps).unsqueeze(0)

    def measure(self, trainer, flow, datamodule) -> dict:
        from eqflow.dynamics.integrators import sde_heun
        from eqflow.metrics.tracking import (detect, foreground, link, motion_statistics,
                                             reference_blobs, typical_area)

        system = datamodule.system
        size = int(system.canvas * self.scale)
        g = self.generator()
        x0 = self.start_state(datamodule.x, size, flow.score_model.alpha.cpu(), g).to(flow.device)
        decay = self.ema ** self.frame_every
        frames, state = [], {"ema": None}

        def keep(k: int, x: torch.Tensor) -> None:
            if k % self.frame_every:
                return
            x0_hat = flow.score_model.denoise(x).clamp(-1, 1)
            state["ema"] = x0_hat if state["ema"] is None else decay * state["ema"] + (1 - decay) * x0_hat
            frames.append(state["ema"][0].cpu())

        sde_heun(lambda x, s: flow.apply_D(s), flow.score, x0, self.dt, self.steps, self.eta,
                 generator=g, callback=keep, drift_from_score=True)
        background = tuple(float(c) for c in system.background)

        def rgb(image: torch.Tensor) -> np.ndarray:
            return (image.float().cpu().numpy().transpose(1, 2, 0) + 1) / 2

        # a creature is a blob of the size the training scatters' creatures have: fragments and
        # merged textures (stripes, a half-formed pattern) are not followed
        reference = reference_blobs([rgb(x) for x in datamodule.x[:self.reference_images]],
                                    background, self.threshold, self.min_area)
        ref_area = typical_area(np.concatenate(reference))
        low, high = self.min_area, np.inf
        if self.area_range is not None:
            low, high = max(self.min_area, self.area_range[0] * ref_area), self.area_range[1] * ref_area
        # as many creatures as the training scatters hold per pixel (counted the same way)
        expected = float(np.mean([((a >= low) & (a <= high)).sum() for a in reference])) * self.scale ** 2
        detections = [detect(foreground(rgb(f), background, self.threshold), low, high)
                      for f in frames]
        max_step = self.max_step or max(system.icon.shape[:2]) / 2
        tracks = link(detections, (size, size), max_step)
        stats = motion_statistics(tracks, (size, size), self.dt * self.frame_every,
                                  self.min_track_frames)
        figs = self.output_dir / "figures"
        for path in plots.tracked_animation(frames, tracks, figs / "creatures.gif"):
            log_video(trainer.loggers, f"figures/creatures_{path.suffix.lstrip('.')}", path)
            log.info("Animation written to %s", path)
        self.figure(trainer, "figures/creatures", plots.creatures_figure(
            system.icon, datamodule.x[0], frames, tracks, figs / "creatures.png",
            f"{system.icon_name}: mean speed {stats['mean_speed']:.3g} px per unit time, "
            f"polarisation {stats['polarisation']:.2f}"))
        mean_count = float(np.mean([len(d) for d in detections]))
        return {"creatures/mean_speed": stats["mean_speed"],
                "creatures/mean_path_speed": stats["mean_path_speed"],
                "creatures/polarisation": stats["polarisation"],
                "creatures/n_tracks": stats["n_tracks"],
                "creatures/track_speeds": stats["track_speeds"],
                "creatures/mean_count": mean_count,
                "creatures/expected_count": expected,
                "creatures/count_ratio": mean_count / expected if expected else float("nan"),
                "creatures/reference_area": ref_area}
