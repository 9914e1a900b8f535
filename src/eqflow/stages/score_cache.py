"""The score model's cache entry: its key, and reading it back without training (the path a
finished run is read back by). Training and writing the entry is :mod:`eqflow.stages.score`."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from eqflow.compat import BASELINE_TRAINER
from eqflow.data import Snapshots
from eqflow.io.cache import CorruptCacheError, entry_path, load_entry, plain_container
from eqflow.models.score import Score
from eqflow.stages.data import data_key


class MissingScoreError(FileNotFoundError):
    """A run is read back but its score model is not in the cache (reading never trains)."""


# trainer keys that leave what the score model learns unchanged: where it runs and what it
# prints, or set by the score's own fit (max_epochs is score.epochs, gradient clipping is
# score.gradient_clip_val; see eqflow.stages.score.train_score)
NEUTRAL_TRAINER_KEYS = frozenset(
    {
        "_target_",
        "accelerator",
        "enable_model_summary",
        "enable_progress_bar",
        "log_every_n_steps",
        "default_root_dir",
        "max_epochs",
        "gradient_clip_val",
        "logger",
        "callbacks",
        "plugins",
        "num_sanity_val_steps",
    }
)


def bfloat16_is_fast(accelerator: str = "cpu") -> bool:
    """Whether the machine computes in bfloat16 natively: a CUDA GPU that supports it, or a
    CPU with bfloat16 units (AVX-512 BF16, AMX). Elsewhere bfloat16 is emulated, about 10x
    slower than float32 (a U-Net step on an AVX2 CPU: 5.25 s against 0.56 s,
    benchmarks/bench_unet_precision.py)."""
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def score_precision(cfg: DictConfig) -> str | None:
    """``score.precision`` as the fit uses it: ``auto`` is bf16-mixed where bfloat16 is fast
    (:func:`bfloat16_is_fast`), else null (the trainer's, float32); the cache key holds the
    resolved value, so machines that fit differently keep entries of their own."""
    value = cfg.score.get("precision")
    if value != "auto":
        return value
    accelerator = str(OmegaConf.select(cfg, "trainer.accelerator", default="cpu"))
    return "bf16-mixed" if bfloat16_is_fast(accelerator) else None


def score_fit_settings(cfg: DictConfig) -> dict:
    """The trainer settings that change the score model's fit (``limit_train_batches``,
    ``fast_dev_run``, ``overfit_batches``, ``precision``, several devices, ...): the trainer
    config without its neutral keys and its baseline values."""
    trainer = cfg.get("trainer") or {}
    # resolved key by key: the neutral keys (paths among them) are never resolved
    fit = {k: plain_container(trainer[k]) for k in trainer if k not in NEUTRAL_TRAINER_KEYS}
    settings = {k: v for k, v in fit.items() if v not in BASELINE_TRAINER.get(k, ())}
    if score_precision(cfg) is not None:  # the score's own precision wins (stages.score)
        settings.pop("precision", None)
    return settings


def score_key(cfg: DictConfig) -> dict:
    """What a cached score model depends on: the data, the score config and the trainer
    settings its fit inherits, so that a debug flag (``+trainer.limit_train_batches=1``) makes
    an entry of its own instead of the one every later run would read."""
    score = plain_container(cfg.score)
    score["precision"] = score_precision(cfg)
    if score.get("precision") is None:  # unset: the key of the caches made before the option
        score.pop("precision", None)
    key = {**data_key(cfg), "score": score}
    if fit := score_fit_settings(cfg):
        key["trainer"] = fit
    return key


def make_score(cfg: DictConfig, snapshots: Snapshots) -> Score:
    """An untrained score model of the config's kind, shaped for the snapshots."""
    x = snapshots.x
    shape = {"dim": x.shape[1]} if x.ndim == 2 else {"channels": x.shape[1]}
    return instantiate(cfg.score.model, **shape, _convert_="all")


def score_from_record(
    cfg: DictConfig, snapshots: Snapshots, record: dict, path: Path, hit: bool
) -> tuple[Score, dict]:
    """The model in eval mode and the ``score/*`` entries of metrics.json (with its loss
    history) from a cache record."""
    model = make_score(cfg, snapshots)
    model.load_state_dict(record["state_dict"])
    model.eval()
    history = record["loss_history"]
    info = {
        "score/cache_path": str(path),
        "score/cache_hit": hit,
        "score/train_seconds": record["train_seconds"],
        "score/final_loss": history[-1] if history else None,
        "score/val_loss": record.get("val_loss"),
        "score/val_loss_at_level": record.get("val_loss_at_level"),
    }
    return model, {**info, "loss_history": history}


def read_score(cfg: DictConfig, snapshots: Snapshots) -> tuple[Score, dict]:
    """The cached score model of a run's config; :class:`MissingScoreError` names the entry and
    the fix when it is missing or unusable."""
    key = score_key(cfg)
    path = entry_path("score", key, cfg.paths.cache_dir)
    fix = (
        "pass the cache the run used with paths.cache_dir=<dir>, or re-run train.py with the "
        "run's config to rebuild it"
    )
    if not path.exists():
        raise MissingScoreError(f"the score model of this run is not in the cache ({path}); {fix}")
    try:
        return score_from_record(cfg, snapshots, load_entry(path, key), path, True)
    except (CorruptCacheError, RuntimeError, KeyError) as exc:
        raise MissingScoreError(
            f"the cached score model {path} is unusable ({exc}); {fix}"
        ) from exc
