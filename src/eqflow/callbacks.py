"""Lightning callbacks: :class:`Measure` runs the measurement protocols when a fit ends (through
:func:`eqflow.protocols.runner.measure_and_record`, the one runner every fit and evaluate.py
use); the others keep the training history (loss curve, fit time) and show score-model samples."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytorch_lightning as pl
import torch

from eqflow import plots
from eqflow.errors import NonFiniteLossError
from eqflow.protocols.base import Protocol
from eqflow.protocols.runner import measure_and_record

log = logging.getLogger(__name__)


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
