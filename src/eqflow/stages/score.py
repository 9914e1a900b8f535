"""The score stage of a run: the score model for a data + score config, read from the cache or
trained (resumably, file-locked) and cached. The entry's key and reading it back without
training are :mod:`eqflow.stages.score_cache`."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from eqflow.callbacks import FiniteWeights, LossHistory, ScoreSamples, TrainingClock
from eqflow.data import SnapshotDataModule, Snapshots, SnapshotSystem
from eqflow.io.cache import cached, entry_path
from eqflow.io.checkpoints import AtomicCheckpointIO, every_epoch_checkpoint, resumable_checkpoint
from eqflow.io.interrupts import fit_unless_stopped
from eqflow.io.storage import CACHE_FOLDER
from eqflow.models.score import Score
from eqflow.stages.building import make_trainer
from eqflow.stages.score_cache import make_score, score_from_record, score_key, score_precision

log = logging.getLogger(__name__)


def load_score(cfg: DictConfig, system: SnapshotSystem, snapshots: Snapshots) -> tuple[Score, dict]:
    """The score model for this data + score config: from the cache, or trained and cached.

    The fit's last epoch is kept beside the cache entry, so rerunning the same command after an
    interruption resumes it there (in any run directory); it is removed once the entry is
    written."""
    key = score_key(cfg)
    resume_dir = entry_path("score", key, cfg.paths.cache_dir).with_suffix(".partial")

    def check(record: dict) -> None:
        make_score(cfg, snapshots).load_state_dict(record["state_dict"])

    record, path, hit = cached(
        "score",
        key,
        lambda: train_score(cfg, system, snapshots, resume_dir),
        cfg.paths.cache_dir,
        validate=check,
    )
    shutil.rmtree(resume_dir, ignore_errors=True)
    return score_from_record(cfg, snapshots, record, path, hit)


def train_score(
    cfg: DictConfig, system: SnapshotSystem, snapshots: Snapshots, resume_dir: Path
) -> dict:
    """Fit the score model (resuming from ``resume_dir`` when an earlier fit was cut off); the
    cache record: weights, loss history, seconds and validation losses."""
    pl.seed_everything(int(cfg.score.seed), workers=True, verbose=False)
    model = make_score(cfg, snapshots)
    dm = SnapshotDataModule(
        system,
        snapshots,
        cfg.score.batch_size,
        seed=int(cfg.score.seed),
        val_fraction=float(cfg.score.get("val_fraction", 0.0)),
    )
    score_dir = Path(cfg.paths.output_dir) / "score"
    history, clock = LossHistory("score/loss"), TrainingClock()
    callbacks = [
        history,
        clock,
        FiniteWeights("score"),
        every_epoch_checkpoint(resume_dir),
        *sample_callbacks(cfg, model, snapshots.x, score_dir),
    ]
    precision = score_precision(cfg)  # else the trainer's (both in the cache key)
    trainer = make_trainer(
        cfg,
        **({"precision": precision} if precision else {}),
        max_epochs=int(cfg.score.epochs),
        logger=False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(CACHE_FOLDER)],
        gradient_clip_val=cfg.score.get("gradient_clip_val"),
        num_sanity_val_steps=0,
        default_root_dir=str(score_dir),
    )
    fit_resumably(trainer, model, dm, resume_dir)
    log.info(
        "Trained the score model in %.1f s (final loss %.4f)",
        clock.seconds,
        history.values[-1] if history.values else float("nan"),
    )
    val = trainer.callback_metrics.get("score/val_loss")
    val_at_level = trainer.callback_metrics.get("score/val_loss_at_level")
    return {
        "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
        "loss_history": history.values,
        "train_seconds": clock.seconds,
        "val_loss": float(val) if val is not None else None,
        "val_loss_at_level": float(val_at_level) if val_at_level is not None else None,
    }


def fit_resumably(trainer, model, dm, resume_dir: Path) -> None:
    """``trainer.fit`` from the last finished epoch in ``resume_dir`` (if any); a SIGTERM stops
    it with :class:`RunInterrupted`, which says how to resume."""
    advice = (
        f"its last finished epoch is kept in {resume_dir}: run the same command "
        f"again to resume it (nothing else was written)"
    )
    checkpoint = resumable_checkpoint(resume_dir)
    fit_unless_stopped(trainer, model, dm, checkpoint, "training the score model", advice)


def sample_callbacks(cfg: DictConfig, model: Score, x, score_dir: Path) -> list:
    """Images sampled from the score model during its fit (``score.samples``), where it can."""
    if not (model.can_sample and cfg.score.get("samples")):
        return []
    if not model.trains_every_level:
        log.info(
            "No score-model samples: ancestral sampling needs every noise level, "
            "and score.model.train_timesteps trains a band of them"
        )
        return []
    return [
        ScoreSamples(
            str(score_dir / "samples"),
            size=x.shape[-1],
            seed=int(cfg.score.seed),
            channel=None if x.shape[1] == 3 else 1,
            **cfg.score.samples,
        )
    ]
