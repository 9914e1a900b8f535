"""The stages of a run: data -> score (cached) -> flow -> metrics."""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities.exceptions import SIGTERMException

from eqflow import plots
from eqflow.cache import atomic_torch_save, cached, entry_path
from eqflow.callbacks import (
    FiniteWeights,
    LossHistory,
    Measure,
    ScoreSamples,
    TrainingClock,
    measure_and_record,
    measure_flows,
    send_to_loggers,
)
from eqflow.checkpointing import AtomicCheckpointIO, every_epoch_checkpoint, resumable_checkpoint
from eqflow.config import validate
from eqflow.data import SnapshotData, SnapshotDataModule, Snapshots, SnapshotSystem
from eqflow.errors import ConfigError, RunInterrupted
from eqflow.interrupts import stage
from eqflow.models.ensemble import ENSEMBLES, EnsembleDataModule, EnsembleMixin
from eqflow.models.exact import ExactFlowModule
from eqflow.models.score import Score
from eqflow.models.training_free import TrainingFreeFlow
from eqflow.protocols.base import Protocol
from eqflow.report import (
    build_loggers,
    finish_loggers,
    log_figure,
    log_to_loggers,
    read_metrics,
    update_metrics,
    write_text_atomic,
)
from eqflow.storage import RUN_FOLDER

log = logging.getLogger(__name__)


def _container(node) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def file_fingerprints(tree: Any) -> dict[str, str]:
    """sha256 of every existing file (or folder of files) a config names: an icon's or a data
    file's bytes, not just its path."""
    import hashlib

    found = {}
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list) else [tree]
    for value in values:
        if isinstance(value, (dict, list)):
            found.update(file_fingerprints(value))
        elif isinstance(value, str) and os.path.isfile(os.path.expanduser(value)):
            found[value] = hashlib.sha256(Path(value).expanduser().read_bytes()).hexdigest()
        elif isinstance(value, str) and value not in (".", "") and os.path.isdir(os.path.expanduser(value)):
            digest = hashlib.sha256()  # a folder of files (images): every name and its bytes
            for f in sorted(Path(value).expanduser().iterdir()):
                if f.is_file():
                    digest.update(f.name.encode() + b"\0" + f.read_bytes())
            found[value] = digest.hexdigest()
    return found


def data_key(cfg: DictConfig) -> dict:
    """What the cached snapshots depend on: the data config, its seed and the files it names."""
    data = _container(cfg.data)
    key = {"data": data, "seed": int(cfg.data_seed)}
    files = file_fingerprints(data)
    if files:
        key["files"] = files
    return key


def score_key(cfg: DictConfig) -> dict:
    score = _container(cfg.score)
    return {**data_key(cfg), "score": score}


def load_data(cfg: DictConfig) -> tuple[SnapshotSystem, Snapshots]:
    """Instantiate the system and draw (or load cached) snapshots from ``data_seed``."""
    system, snapshots, _ = load_data_with_info(cfg)
    return system, snapshots


def build_system(cfg: DictConfig) -> SnapshotSystem:
    """The data config's system (a file it reads is read and checked here)."""
    try:
        return instantiate(cfg.data)
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ValueError) else exc
        raise ConfigError(f"cannot build data={cfg.data.get('_target_')}: {cause}") from exc


def load_data_with_info(cfg: DictConfig, system: SnapshotSystem | None = None,
                        ) -> tuple[SnapshotSystem, Snapshots, dict]:
    """:func:`load_data`, plus how the data came: generation time, cache path and hit."""
    system = system if system is not None else build_system(cfg)

    def build() -> dict:
        g = torch.Generator().manual_seed(int(cfg.data_seed))
        start = time.perf_counter()
        snaps = system.generate(g)
        seconds = time.perf_counter() - start
        log.info("Generated %d snapshots of %s in %.1f s", len(snaps.x), type(system).__name__,
                 seconds)
        return {**snaps.to_dict(), "generate_seconds": seconds}

    info = {}
    if getattr(system, "cache_data", False):
        record, path, hit = cached("data", data_key(cfg), build, cfg.paths.cache_dir,
                                   validate=Snapshots.from_dict)
        info = {"data/cache_path": str(path), "data/cache_hit": hit}
    else:
        record = build()
    info["data/generate_seconds"] = record.get("generate_seconds")
    return system, Snapshots.from_dict(record), info


def _trainer(cfg: DictConfig, **overrides) -> pl.Trainer:
    return instantiate(cfg.trainer, **overrides)


class MissingScoreError(FileNotFoundError):
    """A run is read back but its score model is not in the cache (reading never trains)."""


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
        trainer = _trainer(cfg, max_epochs=int(cfg.score.epochs), logger=False,
                           callbacks=callbacks, plugins=[AtomicCheckpointIO()],
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


def build_flow(cfg: DictConfig, score: Score, x: torch.Tensor):
    """The flow for data ``x``: (N, d) vectors, or (N, C, H, W) images (``spatial=True``)."""
    extra = {}
    flow_class = get_class(cfg.flow.model._target_)
    if x.ndim == 4:
        if issubclass(flow_class, ExactFlowModule):
            raise ConfigError(f"flow=exact builds v = div A + A s from a d x d skew matrix field, "
                              f"d JVPs a step; on images d = C H W = {x[0].numel()}, which is "
                              f"out of reach. Use flow=training_free (v = D s with a skew "
                              f"convolution: exact too, and convolutional)")
        if not issubclass(flow_class, TrainingFreeFlow):
            raise ConfigError(f"flow={cfg.flow.model._target_} works on vectors; for image data "
                              f"use flow=training_free")
        extra["spatial"] = True
    members = int(cfg.flow.get("ensemble", 1))
    if members > 1:
        if flow_class not in ENSEMBLES:
            raise ConfigError(f"flow.ensemble={members} trains learned flows together; "
                              f"{cfg.flow.model._target_} has nothing to train (sweep its seeds "
                              f"with -m seed=...) or set flow.ensemble=1")
        settings = OmegaConf.to_container(cfg.flow.model, resolve=True)
        settings.pop("_target_")
        seeds = [int(cfg.seed) + k for k in range(members)]
        return ENSEMBLES[flow_class](score, x.shape[1], seeds=seeds, **settings)
    # plain Python containers, so checkpoints' hyper-parameters load with weights_only=True
    return instantiate(cfg.flow.model, score=score, dim=x.shape[1], **extra, _convert_="all")


def build_protocols(cfg: DictConfig) -> tuple[list[Protocol], list[pl.Callback]]:
    """The ``callbacks`` group split into measurement protocols and Lightning callbacks."""
    built = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node]
    return ([b for b in built if isinstance(b, Protocol)],
            [b for b in built if not isinstance(b, Protocol)])


def flow_device(cfg: DictConfig) -> torch.device:
    """Where a flow that is not fitted is measured: the trainer's accelerator (one device)."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")


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
    with stage("making the data", "nothing was kept (the data cache is written only when "
               "complete); run the same command again"):
        system, snapshots, data_info = load_data_with_info(cfg, system)
    score, score_info = load_score(cfg, system, snapshots)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    flow = build_flow(cfg, score, snapshots.x)
    if checkpoint is not None:
        check_checkpoint_matches(checkpoint, cfg.ckpt_path, flow)
    loggers = build_loggers(cfg)
    score_summary = {k: v for k, v in score_info.items() if k != "loss_history"}
    update_metrics(output_dir, {**data_info, **score_summary, "status": "running"})
    samples = sorted((output_dir / "score" / "samples").glob("samples_epoch*.png"))
    if samples:  # the score model was trained in this run: show its last samples
        log_figure(loggers, "score/samples", samples[-1])
    status = "failed"
    try:
        fit_start = time.perf_counter()
        history = LossHistory()
        ensemble = isinstance(flow, EnsembleMixin)
        if flow.trainable:
            fit_flow(cfg, flow, system, snapshots, [*callbacks, history],
                     [] if ensemble else [Measure(protocols, output_dir, int(cfg.seed))],
                     loggers, output_dir)
        else:
            flow.to(flow_device(cfg))
            with stage("measuring the training-free flow", "nothing is lost (it has no "
                       "weights to train); run the same command again"):
                measure_and_record(protocols, flow, SnapshotData(system, snapshots),
                                   int(cfg.seed), output_dir, loggers)
        fit_seconds = time.perf_counter() - fit_start
        loss_figure(output_dir, loggers, history.values, score_info["loss_history"])
        if ensemble:
            info = {**data_info, **score_summary, "time/ensemble_fit_s": fit_seconds}
            with stage("writing and measuring the ensemble's members", "the fit is kept in "
                       f"{output_dir / 'checkpoints' / 'last.ckpt'}; resume with that ckpt_path= "
                       "to write the members again"):
                write_members(cfg, flow, protocols, SnapshotData(system, snapshots), output_dir,
                              info, score_info["loss_history"])
        update_metrics(output_dir, {"time/flow_fit_s": fit_seconds,
                                    "time/total_s": time.perf_counter() - start})
        atomic_torch_save({"state_dict": flow.state_dict()}, output_dir / "flow.pt", RUN_FOLDER)
        status = "success"
    except BaseException as exc:
        update_metrics(output_dir, {"status": f"incomplete: {type(exc).__name__}: {exc}"})
        raise
    finally:
        finish_loggers(loggers, status)
    update_metrics(output_dir, {"status": "finished"})
    metrics = read_metrics(output_dir)
    log.info("Metrics written to %s/metrics.json: %s", output_dir, {
        k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return RunResult(output_dir, metrics, flow)


def fit_flow(cfg: DictConfig, flow, system: SnapshotSystem, snapshots: Snapshots,
             callbacks: list, measure: list, loggers: list, output_dir: Path) -> None:
    """Fit a trainable flow (an ensemble on batches of every member), resuming from
    ``cfg.ckpt_path``; a SIGTERM ends it with :class:`RunInterrupted` (a non-zero exit)."""
    if isinstance(flow, EnsembleMixin):
        dm = EnsembleDataModule(system, snapshots, cfg.flow.batch_size, flow.hparams.seeds)
    else:
        dm = SnapshotDataModule(system, snapshots, cfg.flow.batch_size, seed=int(cfg.seed))
    trainer = _trainer(cfg, logger=loggers or False, plugins=[AtomicCheckpointIO()],
                       callbacks=[*callbacks, FiniteWeights("flow"), *measure])
    advice = (f"its last finished epoch is kept; resume it with "
              f"ckpt_path={output_dir / 'checkpoints' / 'last.ckpt'}")
    stopped = False
    with stage("fitting the flow (or measuring it when the fit ends)", advice):
        try:
            trainer.fit(flow, datamodule=dm, ckpt_path=cfg.get("ckpt_path"))
        except SIGTERMException:  # Lightning's is a SystemExit with status 0
            stopped = True
    if stopped or trainer.received_sigterm:
        raise RunInterrupted(f"the run was stopped (SIGTERM) in epoch {trainer.current_epoch + 1}; "
                             f"{advice}")


def member_config(cfg: DictConfig, seed: int, output_dir: Path) -> DictConfig:
    """The config of one ensemble member: the run's, as a single run of ``seed`` in ``output_dir``."""
    member = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(member):
        member.seed = int(seed)
        member.flow.ensemble = 1
        member.paths.output_dir = str(output_dir)
    return member


def write_members(cfg: DictConfig, flow: EnsembleMixin, protocols: list[Protocol],
                  data: SnapshotData, output_dir: Path, info: dict,
                  score_losses: list[float]) -> list[Path]:
    """One folder per member, ``seed<s>/``, laid out like a multirun's job: its config (as a
    single run of that seed), ``flow.pt``, ``metrics.json`` from the protocols (run on all
    members at once, batched where a protocol can), figures, and its own logger run (one W&B
    run per member in the experiment's group, as a multirun's jobs have)."""
    seeds = [int(s) for s in flow.hparams.seeds]
    folders = [output_dir / f"seed{seed}" for seed in seeds]
    members = [flow.member(k) for k in range(len(seeds))]
    configs = [member_config(cfg, seed, folder) for seed, folder in zip(seeds, folders)]
    for k, folder in enumerate(folders):
        write_text_atomic(folder / ".hydra" / "config.yaml", OmegaConf.to_yaml(configs[k]))
        update_metrics(folder, {**info, "status": "running", "ensemble/member": k,
                                "ensemble/members": len(seeds), "ensemble/run": str(output_dir)})
    measured = measure_flows(protocols, members, data, seeds, folders)
    for k, (folder, member) in enumerate(zip(folders, members)):
        loggers = build_loggers(configs[k])
        status = "failed"
        try:
            losses = [epoch[k] for epoch in flow.member_losses]
            for epoch, value in enumerate(losses):
                log_to_loggers(loggers, {"train/loss": value}, step=epoch)
            send_to_loggers(loggers, measured[k], step=len(losses))
            loss_figure(folder, loggers, losses, score_losses)
            atomic_torch_save({"state_dict": member.state_dict()}, folder / "flow.pt", RUN_FOLDER)
            update_metrics(folder, {"status": "finished"})
            status = "success"
        finally:
            finish_loggers(loggers, status)
    log.info("Wrote %d ensemble members under %s (seed<s>/ each)", len(folders), output_dir)
    return folders


def read_checkpoint(path: str, cfg: DictConfig) -> dict:
    """Read ``ckpt_path`` safely (tensors and plain containers only) and check that it is an
    eqflow flow checkpoint of the configured flow; a clear error otherwise."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"ckpt_path={path} does not exist; pass the path of a checkpoint "
                                f"written by a previous run, e.g. "
                                f"outputs/runs/<name>/<time>/checkpoints/last.ckpt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"ckpt_path={path} cannot be read as a checkpoint ({type(exc).__name__}); "
                          f"it is truncated, corrupt or not a checkpoint. Pass another one (each "
                          f"run keeps checkpoints/last.ckpt) or start the run without ckpt_path")
    if not isinstance(state, dict) or "state_dict" not in state or "hyper_parameters" not in state:
        raise ConfigError(f"ckpt_path={path} is not an eqflow flow checkpoint (no state_dict and "
                          f"hyper_parameters); pass <run>/checkpoints/last.ckpt")
    # the architecture must match; training settings (lr, a relaxation stage) may change
    configured = OmegaConf.to_container(cfg.flow.model, resolve=True)
    differ = [f"{k} (checkpoint {state['hyper_parameters'].get(k)!r}, config {v!r})"
              for k, v in configured.items() if k in ("hidden", "activation", "n_freqs")
              and k in state["hyper_parameters"] and _plain(state["hyper_parameters"][k]) != _plain(v)]
    if differ:
        raise ConfigError(f"ckpt_path={path} holds another flow architecture: "
                          f"{'; '.join(differ)}. Resume with the settings the run had (its "
                          f".hydra/config.yaml), or start a new run without ckpt_path")
    return state


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def check_checkpoint_matches(state: dict, path: str, flow: pl.LightningModule) -> None:
    """The checkpoint's flow must fit this flow's architecture, and its score model must be the
    one this config trains (same data, same score settings): resuming never swaps it."""
    own = flow.state_dict()
    theirs = state["state_dict"]
    shapes = [k for k in own if k in theirs and own[k].shape != theirs[k].shape]
    missing = [k for k in own if k not in theirs and not k.startswith("anchor")]
    if shapes or missing:
        raise ConfigError(f"ckpt_path={path} holds another architecture (parameters "
                          f"{', '.join((shapes + missing)[:4])} differ); resume with the run's own "
                          f"flow settings (.hydra/config.yaml)")
    score = [k for k in own if k.startswith("score_model.") and k in theirs
             and not torch.equal(own[k].cpu(), theirs[k].cpu())]
    if score:
        raise ConfigError(f"ckpt_path={path} was trained with another score model than this "
                          f"config's (other data or score settings: {score[0]} differs); resume "
                          f"with the data and score settings of the run that wrote it "
                          f"(its .hydra/config.yaml)")


def loss_figure(output_dir: Path, loggers: list, flow_losses: list[float],
                score_losses: list[float]) -> None:
    """``figures/loss.png``: the epoch-mean training losses of the flow and the score model."""
    series = {name: values for name, values in
              [("flow loss", flow_losses), ("score loss", score_losses)] if values}
    if series:
        path = plots.curves(series, output_dir / "figures" / "loss.png", "epoch", "loss",
                            "Training loss", logy=True)
        log_figure(loggers, "figures/loss", path)
