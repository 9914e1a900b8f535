"""The loggers a config names (W&B, CSV): built once, fed scalars, figures and videos, finished."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from eqflow.io.wandb_runs import identity, wandb_settings


def scalars(values: dict) -> dict[str, float]:
    """The finite scalar entries of ``values`` (what loggers can chart)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def log_to_loggers(loggers, values: dict, step: int | None = None) -> None:
    row = scalars(values)
    for logger in loggers:
        if row:
            logger.log_metrics(row, step=step)
        if isinstance(logger, WandbLogger):
            summary = logger.experiment.summary
            for k, v in row.items():
                summary[k] = v


def log_figure(loggers, key: str, path: str | os.PathLike) -> None:
    """Send a saved figure to every logger that takes images (W&B); it is on disk already."""
    for logger in loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[str(path)])


def log_video(loggers, key: str, path: str | os.PathLike) -> None:
    """Send a saved animation (GIF or MP4) to every W&B logger as a video."""
    import wandb

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            fmt = Path(path).suffix.lstrip(".") or "gif"
            logger.experiment.log({key: wandb.Video(str(path), format=fmt)})


def flatten(tree: Any, prefix: str = "") -> dict:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists kept as values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def instantiate_loggers(cfg: DictConfig, settings: dict[str, dict] | None = None) -> list:
    """The loggers ``cfg.logger`` names (``logger=wandb|csv|none``), each built with the
    keyword arguments ``settings`` gives under its name."""
    settings = settings or {}
    return [
        instantiate(node, **settings.get(name, {}))
        for name, node in (cfg.get("logger") or {}).items()
        if node
    ]


def build_loggers(cfg: DictConfig, log_config: bool = True) -> list:
    """A run's loggers, with the flattened config as their hyper-parameters. A W&B logger is
    placed by :func:`eqflow.io.wandb_runs.wandb_settings` (group, name, tags, a resumed run's
    id) where its config leaves them unset; an ensemble's own run (its fit) stays out of its
    members' group."""
    settings = {}
    wandb_node = (cfg.get("logger") or {}).get("wandb")
    if wandb_node:
        members = int(OmegaConf.select(cfg, "flow.ensemble", default=1) or 1)
        placed = wandb_settings(cfg, ensemble_fit=members > 1)
        settings["wandb"] = {
            k: v for k, v in placed.items() if k in ("id", "resume") or not wandb_node.get(k)
        }
    loggers = instantiate_loggers(cfg, settings)
    if log_config:
        flat = flatten(OmegaConf.to_container(cfg, resolve=True))
        for logger in loggers:
            logger.log_hyperparams(flat)
    return loggers


def wandb_identity(loggers: list) -> dict:
    """The W&B run id, group and name of the W&B logger among ``loggers`` (for metrics.json)."""
    return next((identity(lg) for lg in loggers if isinstance(lg, WandbLogger)), {})


def finish_loggers(loggers: list, status: str = "success") -> None:
    for logger in loggers:
        logger.finalize(status)
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish(exit_code=0 if status == "success" else 1)
