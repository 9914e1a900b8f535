"""The flow stage of a run: fit a trainable flow (resumably) and measure it, or measure a
training-free one; an ensemble's members written as runs of their own."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from eqflow import plots
from eqflow.callbacks import FiniteWeights, LossHistory, Measure
from eqflow.data import SnapshotData, SnapshotDataModule, Snapshots, SnapshotSystem
from eqflow.io.cache import atomic_torch_save
from eqflow.io.checkpoints import AtomicCheckpointIO
from eqflow.io.interrupts import fit_unless_stopped, stage
from eqflow.io.loggers import (
    build_loggers,
    finish_loggers,
    log_figure,
    log_to_loggers,
    wandb_identity,
)
from eqflow.io.metrics_file import update_metrics, write_json_atomic, write_text_atomic
from eqflow.io.run_folders import ENSEMBLE_MARKER
from eqflow.io.storage import RUN_FOLDER
from eqflow.io.wandb_runs import log_artifact, run_group
from eqflow.models.ensemble import EnsembleDataModule, EnsembleMixin
from eqflow.protocols.base import Protocol
from eqflow.protocols.runner import measure_and_record, measure_flows, send_to_loggers
from eqflow.stages.building import flow_device, make_trainer

log = logging.getLogger(__name__)


def fit_and_measure(
    cfg: DictConfig,
    flow,
    data: SnapshotData,
    protocols: list[Protocol],
    callbacks: list,
    loggers: list,
    score_losses: list[float],
) -> tuple[float, int]:
    """Fit a trainable flow and measure it (an ensemble's members are measured by
    :func:`write_members`), or measure a training-free one; the seconds this took and the
    fit's last step, and the loss figure."""
    output_dir = Path(cfg.paths.output_dir)
    fit_start = time.perf_counter()
    history = LossHistory()
    ensemble = isinstance(flow, EnsembleMixin)
    steps = 0
    if flow.trainable:
        steps = fit_flow(
            cfg,
            flow,
            data.system,
            data.snapshots,
            [*callbacks, history],
            [] if ensemble else [Measure(protocols, output_dir, int(cfg.seed))],
            loggers,
            output_dir,
        )
    else:
        flow.to(flow_device(cfg))
        with stage(
            "measuring the training-free flow",
            "nothing is lost (it has no weights to train); run the same command again",
        ):
            measure_and_record(protocols, flow, data, int(cfg.seed), output_dir, loggers)
    fit_seconds = time.perf_counter() - fit_start
    loss_figure(output_dir, loggers, history.values, score_losses)
    return fit_seconds, steps


def fit_flow(
    cfg: DictConfig,
    flow,
    system: SnapshotSystem,
    snapshots: Snapshots,
    callbacks: list,
    measure: list,
    loggers: list,
    output_dir: Path,
) -> int:
    """Fit a trainable flow (an ensemble on batches of every member), resuming from
    ``cfg.ckpt_path``; a SIGTERM ends it with :class:`RunInterrupted` (a non-zero exit).
    Returns the fit's last global step (the step axis every logged value of the run shares)."""
    if isinstance(flow, EnsembleMixin):
        dm = EnsembleDataModule(system, snapshots, cfg.flow.batch_size, flow.hparams.seeds)
    else:
        dm = SnapshotDataModule(system, snapshots, cfg.flow.batch_size, seed=int(cfg.seed))
    trainer = make_trainer(
        cfg,
        logger=loggers or False,
        plugins=[AtomicCheckpointIO()],
        callbacks=[*callbacks, FiniteWeights("flow"), *measure],
    )
    advice = (
        f"its last finished epoch is kept; resume it with "
        f"ckpt_path={output_dir / 'checkpoints' / 'last.ckpt'}"
    )
    doing = "fitting the flow (or measuring it when the fit ends)"
    fit_unless_stopped(trainer, flow, dm, cfg.get("ckpt_path"), doing, advice)
    return trainer.global_step


def member_config(cfg: DictConfig, seed: int, output_dir: Path) -> DictConfig:
    """The config of one ensemble member: the run's, as a single run of ``seed`` in
    ``output_dir``."""
    member = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(member):
        member.group = run_group(cfg)  # the ensemble's: its members are one W&B group
        member.seed = int(seed)
        member.flow.ensemble = 1
        member.paths.output_dir = str(output_dir)
    return member


def write_members(
    cfg: DictConfig,
    flow: EnsembleMixin,
    protocols: list[Protocol],
    data: SnapshotData,
    output_dir: Path,
    info: dict,
    score_info: dict,
    steps: int,
) -> list[Path]:
    """One folder per member, ``seed<s>/``, laid out like a multirun's job: its config (as a
    single run of that seed), ``flow.pt``, ``metrics.json`` from the protocols (run on all
    members at once, batched where a protocol can), figures, and its own logger run (one W&B
    run per member in the experiment's group, as a multirun's jobs have)."""
    seeds = [int(s) for s in flow.hparams.seeds]
    folders = [output_dir / f"seed{seed}" for seed in seeds]
    members = [flow.member(k) for k in range(len(seeds))]
    configs = [member_config(cfg, seed, folder) for seed, folder in zip(seeds, folders)]
    write_json_atomic(
        {"seeds": seeds, "members": [f.name for f in folders]}, output_dir / ENSEMBLE_MARKER
    )
    for k, folder in enumerate(folders):
        write_text_atomic(folder / ".hydra" / "config.yaml", OmegaConf.to_yaml(configs[k]))
        update_metrics(
            folder,
            {
                **info,
                "status": "running",
                "ensemble/member": k,
                "ensemble/members": len(seeds),
                "ensemble/run": str(output_dir),
            },
        )
    measured = measure_flows(protocols, members, data, seeds, folders)
    for k, (folder, member) in enumerate(zip(folders, members)):
        loggers = build_loggers(configs[k])
        status = "failed"
        try:
            update_metrics(folder, wandb_identity(loggers))
            losses = [epoch[k] for epoch in flow.member_losses]
            per_epoch = steps // max(len(losses), 1)  # the step axis of a single run's fit
            for epoch, value in enumerate(losses):
                row = {"train/loss": value, "epoch": epoch}
                log_to_loggers(loggers, row, step=(epoch + 1) * per_epoch - 1)
            send_to_loggers(loggers, measured[k], step=steps)
            loss_figure(folder, loggers, losses, score_info["loss_history"])
            atomic_torch_save({"state_dict": member.state_dict()}, folder / "flow.pt", RUN_FOLDER)
            log_run_artifacts(loggers, folder, score_info["score/cache_path"])
            update_metrics(folder, {"status": "finished"})
            status = "success"
        finally:
            finish_loggers(loggers, status)
    log.info("Wrote %d ensemble members under %s (seed<s>/ each)", len(folders), output_dir)
    return folders


def loss_figure(
    output_dir: Path, loggers: list, flow_losses: list[float], score_losses: list[float]
) -> None:
    """``figures/loss.png``: the epoch-mean training losses of the flow and the score model."""
    series = {
        name: values
        for name, values in [("flow loss", flow_losses), ("score loss", score_losses)]
        if values
    }
    if series:
        path = plots.curves(
            series, output_dir / "figures" / "loss.png", "epoch", "loss", "Training loss", logy=True
        )
        log_figure(loggers, "figures/loss", path)


def log_run_artifacts(loggers: list, run_dir: Path, score_path: str | None) -> None:
    """The flow (weights, metrics, config) and the score model it used, as W&B artifacts of the
    run (the score's is the same artifact version for every run that shares it)."""
    log_artifact(
        loggers,
        f"flow-{run_dir.parent.name}-{run_dir.name}",
        "flow",
        [run_dir / "flow.pt", run_dir / "metrics.json", run_dir / ".hydra" / "config.yaml"],
    )
    if score_path:
        log_artifact(loggers, f"score-{Path(score_path).stem}", "score-model", [Path(score_path)])
