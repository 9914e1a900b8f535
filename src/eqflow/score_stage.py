"""The score stage of a run: the score model for a data + score config, read from the cache or
trained (resumably, file-locked) and cached; its cache key."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytorch_lightning as pl
from hydra.utils import instantiate
from omegaconf import DictConfig
from pytorch_lightning.utilities.exceptions import SIGTERMException

from eqflow.building import make_trainer
from eqflow.cache import cached, entry_path
from eqflow.callbacks import (
    FiniteWeights,
    LossHistory,
    ScoreSamples,
    TrainingClock,
)
from eqflow.checkpointing import AtomicCheckpointIO, every_epoch_checkpoint, resumable_checkpoint
from eqflow.data import SnapshotDataModule, Snapshots, SnapshotSystem
from eqflow.data_stage import data_key, plain_container
from eqflow.errors import RunInterrupted
from eqflow.interrupts import stage
from eqflow.models.score import Score
from eqflow.storage import CACHE_FOLDER

log = logging.getLogger(__name__)


class MissingScoreError(FileNotFoundError):
    """A run is read back but its score model is not in the cache (reading never trains)."""


def score_key(cfg: DictConfig) -> dict:
    score = plain_container(cfg.score)
    return {**data_key(cfg), "score": score}


def load_score(cfg: DictConfig, system: SnapshotSystem, snapshots: Snapshots,
               train_if_missing: bool = True) -> tuple[Score, dict]:
    """The score model for this data + score config: from the cache, or trained and cached
    (``train_if_missing=False``: a missing entry raises :class:`MissingScoreError`)."""
    x = snapshots.x
    shape = {"dim": x.shape[1]} if x.ndim == 2 else {"channels": x.shape[1]}
    score_dir = Path(cfg.paths.output_dir) / "score"
    key = score_key(cfg)
    # the fit's last epoch is kept beside the cache entry, so rerunning the same command after
    # an interruption resumes it there (in any run directory); removed once the entry is written
    resume_dir = entry_path("score", key, cfg.paths.cache_dir).with_suffix(".partial")

    def make() -> Score:
        return instantiate(cfg.score.model, **shape, _convert_="all")

    def build() -> dict:
        if not train_if_missing:
            raise MissingScoreError(
                f"the score model of this run is not in the cache ({entry_path('score', key, cfg.paths.cache_dir)}); "
                f"pass the cache the run used with paths.cache_dir=<dir>, or re-run train.py with "
                f"the run's config to rebuild it")
        pl.seed_everything(int(cfg.score.seed), workers=True, verbose=False)
        model = make()
        dm = SnapshotDataModule(system, snapshots, cfg.score.batch_size, seed=int(cfg.score.seed),
                                val_fraction=float(cfg.score.get("val_fraction", 0.0)))
        history, clock = LossHistory("score/loss"), TrainingClock()
        last = every_epoch_checkpoint(resume_dir)
        callbacks = [history, clock, FiniteWeights("score"), last]
        if model.can_sample and cfg.score.get("samples"):
            if not model.trains_every_level:
                log.info("No score-model samples: ancestral sampling needs every noise level, "
                         "and score.model.train_timesteps trains a band of them")
            else:
                callbacks.append(ScoreSamples(str(score_dir / "samples"), size=x.shape[-1],
                                              seed=int(cfg.score.seed),
                                              channel=None if x.shape[1] == 3 else 1,
                                              **cfg.score.samples))
        trainer = make_trainer(cfg, max_epochs=int(cfg.score.epochs), logger=False,
                           callbacks=callbacks, plugins=[AtomicCheckpointIO(CACHE_FOLDER)],
                           gradient_clip_val=cfg.score.get("gradient_clip_val"),
                           num_sanity_val_steps=0, default_root_dir=str(score_dir))
        advice = (f"its last finished epoch is kept in {resume_dir}: run the same command "
                  f"again to resume it (nothing else was written)")
        stopped = False
        with stage("training the score model", advice):
            try:
                trainer.fit(model, datamodule=dm, ckpt_path=resumable_checkpoint(resume_dir))
            except SIGTERMException:  # Lightning's is a SystemExit with status 0
                stopped = True
        if stopped or trainer.received_sigterm:
            raise RunInterrupted(f"the score model's training was stopped (SIGTERM) in epoch "
                                 f"{trainer.current_epoch + 1}; {advice}")
        seconds = clock.seconds
        log.info("Trained the score model in %.1f s (final loss %.4f)", seconds,
                 history.values[-1] if history.values else float("nan"))
        val = trainer.callback_metrics.get("score/val_loss")
        val_at_level = trainer.callback_metrics.get("score/val_loss_at_level")
        return {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                "loss_history": history.values, "train_seconds": seconds,
                "val_loss": float(val) if val is not None else None,
                "val_loss_at_level": float(val_at_level) if val_at_level is not None else None}

    def check(record: dict) -> None:
        make().load_state_dict(record["state_dict"])

    record, path, hit = cached("score", key, build, cfg.paths.cache_dir, validate=check)
    shutil.rmtree(resume_dir, ignore_errors=True)
    model = make()
    model.load_state_dict(record["state_dict"])
    model.eval()
    info = {"score/cache_path": str(path), "score/cache_hit": hit,
            "score/train_seconds": record["train_seconds"],
            "score/final_loss": record["loss_history"][-1] if record["loss_history"] else None,
            "score/val_loss": record.get("val_loss"),
            "score/val_loss_at_level": record.get("val_loss_at_level")}
    return model, {**info, "loss_history": record["loss_history"]}
