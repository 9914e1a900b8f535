"""Lightning callbacks: :class:`Measure` runs the measurement protocols when a fit ends; the
others keep the training history (loss curve, fit time) and show score-model samples."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from eqflow import plots
from eqflow.errors import NonFiniteLossError
from eqflow.io.loggers import log_figure, log_to_loggers, log_video
from eqflow.io.metrics_file import update_metrics
from eqflow.progress import announced
from eqflow.protocols.base import Measurement, Protocol

log = logging.getLogger(__name__)


def measure_and_record(
    protocols: list[Protocol],
    flow,
    data,
    seed: int,
    output_dir: str | Path,
    loggers: list = (),
    step: int = 0,
) -> dict:
    """Run each protocol on ``flow`` in eval mode without gradients, every one with its own
    generator seeded by ``seed``; merge its values (and ``time/<name>_s``) into
    ``output_dir/metrics.json``, send them and its figures to the loggers. Returns the values."""
    (measured,) = measure_flows(protocols, [flow], data, [seed], [output_dir])
    send_to_loggers(loggers, measured, step)
    return measured.values


def measure_flows(
    protocols: list[Protocol], flows: list, data, seeds: list[int], output_dirs: list[str | Path]
) -> list[Measurement]:
    """Each protocol on all ``flows`` at once (``Protocol.measure_many``: batched where the
    protocol can), flow k with generators seeded by ``seeds[k]``, its values merged into
    ``output_dirs[k]/metrics.json``. Returns one merged :class:`Measurement` per flow."""
    dirs = [Path(d) for d in output_dirs]
    merged = [Measurement() for _ in flows]
    states = [f.training for f in flows]
    for f in flows:
        f.eval()
    try:
        for protocol in protocols:
            timing: dict = {}
            what = f"Measuring {protocol.name}" + (f" of {len(flows)} flows" if flows[1:] else "")
            with announced(what, timing, "s"), torch.no_grad():
                results = protocol.measure_many(
                    flows,
                    data,
                    [torch.Generator().manual_seed(int(s)) for s in seeds],
                    [d / "figures" for d in dirs],
                )
            seconds = timing["s"] / len(flows)  # per flow, batched or not
            for result, total, folder in zip(results, merged, dirs):
                if result.values:
                    values = {**result.values, f"time/{protocol.name}_s": seconds}
                    update_metrics(folder, values)
                    total.values.update(values)
                total.figures.update(result.figures)
                total.videos.update(result.videos)
    finally:
        for f, state in zip(flows, states):
            f.train(state)
    return merged


def send_to_loggers(loggers: list, measured: Measurement, step: int = 0) -> None:
    """A measurement's values, figures and animations to every logger."""
    if measured.values:
        log_to_loggers(loggers, measured.values, step=step)
    for key, path in measured.figures.items():
        log_figure(loggers, key, path)
        log.info("Figure %s written to %s", key, path)
    for key, path in measured.videos.items():
        log_video(loggers, key, path)
        log.info("Animation written to %s", path)


class Measure(pl.Callback):
    """When fit ends (on rank 0): :func:`measure_and_record` with the fitted flow and the
    datamodule's data, into ``output_dir``."""

    def __init__(self, protocols: list[Protocol], output_dir: str | Path, seed: int = 0):
        self.protocols, self.output_dir, self.seed = list(protocols), Path(output_dir), seed

    def on_fit_end(self, trainer, pl_module) -> None:
        if trainer.global_rank != 0 or not self.protocols:
            return
        measure_and_record(
            self.protocols,
            pl_module,
            trainer.datamodule.data,
            self.seed,
            self.output_dir,
            trainer.loggers,
            step=trainer.global_step,
        )


class FiniteWeights(pl.Callback):
    """Stop the fit when a weight turns NaN or infinite, at the end of the epoch and before that
    epoch's checkpoint is written (Lightning runs ModelCheckpoint after the other callbacks),
    so no checkpoint ever holds non-finite weights. ``what`` names the model in the message."""

    def __init__(self, what: str = "flow"):
        self.what = what

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        bad = [
            name
            for name, p in pl_module.named_parameters()
            if p.requires_grad and not torch.isfinite(p).all()
        ]
        if bad:
            last = next(
                (
                    c.last_model_path or c.best_model_path
                    for c in trainer.checkpoint_callbacks
                    if (c.last_model_path or c.best_model_path)
                ),
                None,
            )
            where = (
                f"the last checkpoint, {last}, holds the weights before epoch "
                f"{trainer.current_epoch + 1} and can be resumed with ckpt_path={last}"
                if last
                else "no checkpoint was written yet"
            )
            raise NonFiniteLossError(
                f"{self.what} weights became non-finite in epoch {trainer.current_epoch + 1} "
                f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); stopping before a "
                f"checkpoint is written. Lower the learning rate ({self.what}.model.lr); {where}."
            )


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


class ScoreSamples(pl.Callback):
    """Every ``every_n_epochs`` training epochs (and at the last one), draw ``n`` images from
    the score model by ancestral sampling and save them as a grid in ``output_dir``."""

    def __init__(
        self,
        output_dir: str,
        size: int,
        n: int = 8,
        every_n_epochs: int = 5,
        seed: int = 0,
        channel: int | None = 1,
    ):
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
        path = plots.image_grid(
            images,
            self.output_dir / f"samples_epoch{epoch:04d}.png",
            f"score-model samples, epoch {epoch}",
            channel=self.channel,
        )
        self.paths.append(path)
        log.info("Score samples written to %s", path)
