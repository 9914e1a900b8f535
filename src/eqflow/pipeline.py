"""A run, top to bottom: data -> score (cached) -> flow (fitted and measured) -> metrics.json.
Each stage is a module of :mod:`eqflow.stages`; what they read and write, :mod:`eqflow.io`."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig

from eqflow.config import validate
from eqflow.data import SnapshotData
from eqflow.io.cache import atomic_torch_save
from eqflow.io.checkpoints import check_checkpoint_matches, read_checkpoint
from eqflow.io.interrupts import stage
from eqflow.io.loggers import build_loggers, finish_loggers, log_figure, wandb_identity
from eqflow.io.metrics_file import read_metrics, update_metrics
from eqflow.io.storage import RUN_FOLDER
from eqflow.models.ensemble import EnsembleMixin
from eqflow.protocols.base import Protocol
from eqflow.stages.building import build_flow, build_protocols
from eqflow.stages.data import build_system, load_data_with_info
from eqflow.stages.flow import fit_and_measure, log_run_artifacts, write_members
from eqflow.stages.score import load_score

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    output_dir: Path
    metrics: dict
    flow: pl.LightningModule


def train(cfg: DictConfig) -> RunResult:
    """Run every stage for one composed config; returns the :class:`RunResult` (the run folder,
    the metrics written to metrics.json and the flow).

    A trainable flow is fitted (the protocols run when the fit ends, through :class:`Measure`);
    a training-free flow goes straight to the protocols."""
    validate(cfg)
    checkpoint = read_checkpoint(cfg.ckpt_path, cfg) if cfg.get("ckpt_path") else None
    protocols, callbacks = build_protocols(cfg)
    start = time.perf_counter()
    system = build_system(cfg)  # bad data files are refused here, before anything is written
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    log.info("Run directory: %s", output_dir)
    with stage(
        "making the data",
        "nothing was kept (the data cache is written only when "
        "complete); run the same command again",
    ):
        system, snapshots, data_info = load_data_with_info(cfg, system)
    score, score_info = load_score(cfg, system, snapshots)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    flow = build_flow(cfg, score, snapshots.x)
    if checkpoint is not None:
        check_checkpoint_matches(checkpoint, cfg.ckpt_path, flow)
    info = {**data_info, **{k: v for k, v in score_info.items() if k != "loss_history"}}
    data = SnapshotData(system, snapshots)
    steps = fit_logged(cfg, flow, data, protocols, callbacks, info, score_info)
    if isinstance(flow, EnsembleMixin):
        try:
            with stage(
                "writing and measuring the ensemble's members",
                "the fit is kept in "
                f"{output_dir / 'checkpoints' / 'last.ckpt'}; resume with that ckpt_path= "
                "to write the members again",
            ):
                write_members(cfg, flow, protocols, data, output_dir, info, score_info, steps)
        except BaseException as exc:
            update_metrics(output_dir, {"status": f"incomplete: {type(exc).__name__}: {exc}"})
            raise
    update_metrics(output_dir, {"time/total_s": time.perf_counter() - start})
    return RunResult(output_dir, finished_metrics(output_dir), flow)


def fit_logged(
    cfg: DictConfig,
    flow,
    data: SnapshotData,
    protocols: list[Protocol],
    callbacks: list,
    info: dict,
    score_info: dict,
) -> int:
    """The run's own logged part, from its loggers' start to their end: fit and measure the
    flow (an ensemble: fit only), write flow.pt and its artifacts. An ensemble's run ends here,
    before its members open runs of their own. Returns the fit's last step."""
    output_dir = Path(cfg.paths.output_dir)
    loggers = build_loggers(cfg)
    update_metrics(output_dir, {**info, **wandb_identity(loggers), "status": "running"})
    samples = sorted((output_dir / "score" / "samples").glob("samples_epoch*.png"))
    if samples:  # the score model was trained in this run: show its last samples
        log_figure(loggers, "score/samples", samples[-1])
    status = "failed"
    try:
        fit_seconds, steps = fit_and_measure(
            cfg, flow, data, protocols, callbacks, loggers, score_info["loss_history"]
        )
        update_metrics(output_dir, {"time/flow_fit_s": fit_seconds})
        if isinstance(flow, EnsembleMixin):
            info["time/ensemble_fit_s"] = fit_seconds
        atomic_torch_save({"state_dict": flow.state_dict()}, output_dir / "flow.pt", RUN_FOLDER)
        log_run_artifacts(loggers, output_dir, score_info["score/cache_path"])
        status = "success"
    except BaseException as exc:
        update_metrics(output_dir, {"status": f"incomplete: {type(exc).__name__}: {exc}"})
        raise
    finally:
        finish_loggers(loggers, status)
    return steps


def finished_metrics(output_dir: Path) -> dict:
    """Mark the run finished in metrics.json and return its metrics (the numbers logged)."""
    update_metrics(output_dir, {"status": "finished"})
    metrics = read_metrics(output_dir)
    numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    log.info("Metrics written to %s/metrics.json: %s", output_dir, numbers)
    return metrics
