"""The stages of a run: data -> score (cached) -> flow -> metrics."""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from eqflow.cache import atomic_torch_save, cached
from eqflow.callbacks import FigureCallback, LossHistory
from eqflow.checkpointing import AtomicCheckpointIO
from eqflow.config import validate
from eqflow.data import SnapshotDataModule, Snapshots, SnapshotSystem
from eqflow.errors import ConfigError
from eqflow.results import read_metrics, update_metrics
from eqflow.score import ScoreModule

log = logging.getLogger(__name__)


def _container(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def data_key(cfg: DictConfig) -> dict:
    return {"data": _container(cfg.data), "seed": int(cfg.data_seed)}


def score_key(cfg: DictConfig) -> dict:
    score = _container(cfg.score)
    return {**data_key(cfg), "score": score}


def load_data(cfg: DictConfig) -> tuple[SnapshotSystem, Snapshots]:
    """Instantiate the system and draw (or load cached) snapshots from ``data_seed``."""
    try:
        system = instantiate(cfg.data)
    except Exception as exc:
        raise ConfigError(f"cannot build data={cfg.data.get('_target_')}: {exc}") from exc

    def build() -> dict:
        g = torch.Generator().manual_seed(int(cfg.data_seed))
        start = time.perf_counter()
        snaps = system.generate(g)
        log.info("Generated %d snapshots of %s in %.1f s", len(snaps.x), type(system).__name__,
                 time.perf_counter() - start)
        return snaps.to_dict()

    if getattr(system, "cache_data", False):
        record, _, _ = cached("data", data_key(cfg), build, cfg.paths.cache_dir,
                              validate=Snapshots.from_dict)
    else:
        record = build()
    return system, Snapshots.from_dict(record)


def _trainer(cfg: DictConfig, **overrides) -> pl.Trainer:
    return instantiate(cfg.trainer, **overrides)


def load_score(cfg: DictConfig, system: SnapshotSystem, snapshots: Snapshots) -> tuple[ScoreModule, dict]:
    """The score model for this data + score config: from the cache, or trained and cached."""
    dim = snapshots.x.shape[1]

    def make() -> ScoreModule:
        return instantiate(cfg.score.model, dim=dim, _convert_="all")

    def build() -> dict:
        pl.seed_everything(int(cfg.score.seed), workers=True, verbose=False)
        model = make()
        dm = SnapshotDataModule(system, snapshots, cfg.score.batch_size, seed=int(cfg.score.seed))
        history = LossHistory("score/loss")
        trainer = _trainer(cfg, max_epochs=int(cfg.score.epochs), logger=False,
                           callbacks=[history], enable_checkpointing=False,
                           default_root_dir=str(Path(cfg.paths.output_dir) / "score"))
        start = time.perf_counter()
        trainer.fit(model, datamodule=dm)
        seconds = time.perf_counter() - start
        log.info("Trained the score model in %.1f s (final loss %.4f)", seconds,
                 history.values[-1] if history.values else float("nan"))
        return {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
                "loss_history": history.values, "train_seconds": seconds}

    def check(record: dict) -> None:
        make().load_state_dict(record["state_dict"])

    record, path, hit = cached("score", score_key(cfg), build, cfg.paths.cache_dir, validate=check)
    model = make()
    model.load_state_dict(record["state_dict"])
    model.eval()
    info = {"score/cache_path": str(path), "score/cache_hit": hit,
            "score/train_seconds": record["train_seconds"],
            "score/final_loss": record["loss_history"][-1] if record["loss_history"] else None}
    return model, {**info, "loss_history": record["loss_history"]}


def build_flow(cfg: DictConfig, score: ScoreModule, dim: int):
    # plain Python containers, so checkpoints' hyper-parameters load with weights_only=True
    return instantiate(cfg.flow.model, score=score, dim=dim, _convert_="all")


def build_loggers(cfg: DictConfig) -> list:
    loggers = [instantiate(node) for node in (cfg.get("logger") or {}).values() if node]
    flat = flatten(_container(cfg))
    for logger in loggers:
        logger.log_hyperparams(flat)
    return loggers


def flatten(tree: Any, prefix: str = "") -> dict:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists kept as values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def finish_loggers(loggers: list) -> None:
    for logger in loggers:
        logger.finalize("success")
        if type(logger).__name__ == "WandbLogger":
            import wandb

            wandb.finish()


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict
    flow: pl.LightningModule


def train(cfg: DictConfig) -> RunResult:
    """Run every stage for one composed config; returns the metrics written to metrics.json."""
    validate(cfg)
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    log.info("Run directory: %s", output_dir)
    if cfg.get("ckpt_path") and not os.path.isfile(cfg.ckpt_path):
        raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path} does not exist; pass the path of a "
                                f"checkpoint written by a previous run, e.g. "
                                f"outputs/runs/<name>/<time>/checkpoints/last.ckpt")
    start = time.perf_counter()
    system, snapshots = load_data(cfg)
    score, score_info = load_score(cfg, system, snapshots)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    flow = build_flow(cfg, score, snapshots.x.shape[1])
    dm = SnapshotDataModule(system, snapshots, cfg.flow.batch_size, seed=int(cfg.seed))
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node]
    for cb in callbacks:
        if isinstance(cb, FigureCallback):
            cb.score_losses = score_info["loss_history"]
    callbacks.append(LossHistory())
    loggers = build_loggers(cfg)
    overrides: dict = {"logger": loggers or False, "callbacks": callbacks,
                       "plugins": [AtomicCheckpointIO()]}
    if not flow.trainable:
        overrides.update(max_epochs=0, enable_checkpointing=False)
        callbacks[:] = [c for c in callbacks if not isinstance(c, pl.callbacks.ModelCheckpoint)]
    trainer = _trainer(cfg, **overrides)
    update_metrics(output_dir, {k: v for k, v in score_info.items() if k != "loss_history"})
    try:
        fit_start = time.perf_counter()
        trainer.fit(flow, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
        update_metrics(output_dir, {"time/flow_fit_s": time.perf_counter() - fit_start,
                                    "time/total_s": time.perf_counter() - start})
        atomic_torch_save({"state_dict": flow.state_dict()}, output_dir / "flow.pt")
    finally:
        finish_loggers(loggers)
    metrics = read_metrics(output_dir)
    log.info("Metrics written to %s/metrics.json: %s", output_dir, {
        k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return RunResult(output_dir, metrics, flow)
