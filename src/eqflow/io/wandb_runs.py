"""How eqflow's runs are laid out in Weights & Biases, in one place: the group (one per sweep,
ensemble or launch), the run's name and tags, a resumed run's id, and artifacts.

- group: ``group=`` when given; else the experiment and its launch time: a multirun's jobs share
  their sweep folder's time, an ensemble's members their run's, a single run is a group of one.
- name: the group, the job number in a multirun, the seed: unique within a project.
- tags: ``tags=`` and the command-line overrides of the job (``experiment=lorenz``, ``seed=3``).
- an ensemble's own run (its fit, ``job_type=train-ensemble``) goes in ``<group>-ensemble``,
  out of its members' group, so that group means are over members only.
- a run resumed with ``ckpt_path=`` continues the W&B run of the run it resumes.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)

# metrics.json keys under which a run records its W&B identity (what a resumed run reads back)
ID_KEYS = ("wandb/run_id", "wandb/group", "wandb/name")
MAX_TAG = 64  # W&B's limit on a tag's length


def _hydra():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _multirun(hc) -> bool:
    from hydra.types import RunMode

    return hc is not None and hc.mode == RunMode.MULTIRUN


def launch_stamp(folder: str | Path) -> str:
    """A run folder's name without its seed suffix (``2026-12-06_21-30-00_seed0_2`` ->
    ``2026-12-06_21-30-00``): the launch time of eqflow's default folders."""
    return re.sub(r"_seed\d+(_\d+)?$", "", Path(str(folder)).name)


def run_group(cfg: DictConfig) -> str:
    """The W&B group of the run ``cfg`` describes (see the module's docstring)."""
    if cfg.get("group"):
        return str(cfg.group)
    hc = _hydra()
    folder = hc.sweep.dir if _multirun(hc) else cfg.paths.output_dir
    return f"{cfg.name}-{launch_stamp(folder)}"


def run_name(cfg: DictConfig, group: str) -> str:
    hc = _hydra()
    job = [f"job{hc.job.num}"] if _multirun(hc) else []
    return "-".join([group, *job, f"seed{int(cfg.seed)}"])


def run_tags(cfg: DictConfig) -> list[str]:
    """``tags=`` and the job's command-line overrides, each cut to W&B's 64 characters."""
    hc = _hydra()
    overrides = list(hc.overrides.task) if hc is not None else []
    seed = f"seed={int(cfg.seed)}"
    overrides = [o for o in overrides if not o.startswith("seed=")] + [seed]
    tags = [str(t) for t in (cfg.get("tags") or [])] + overrides
    return list(dict.fromkeys(t[:MAX_TAG] for t in tags))


def resumed_identity(cfg: DictConfig) -> dict:
    """For a run resumed with ``ckpt_path=<run>/checkpoints/last.ckpt``: the W&B id, group and
    name of ``<run>`` (from its metrics.json), so that the logger continues that run."""
    ckpt = cfg.get("ckpt_path")
    if not ckpt:
        return {}
    path = Path(str(ckpt)).expanduser().parent.parent / "metrics.json"
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not metrics.get("wandb/run_id"):
        return {}
    return {
        "id": metrics["wandb/run_id"],
        "group": metrics.get("wandb/group"),
        "name": metrics.get("wandb/name"),
        "resume": "allow",
    }


def wandb_settings(cfg: DictConfig, ensemble_fit: bool = False) -> dict:
    """The WandbLogger arguments that place this run: group, name, tags, job type; a resumed
    run's id. ``ensemble_fit``: the ensemble's own run (its fit), outside its members' group."""
    group = run_group(cfg)
    settings = {"group": group, "name": run_name(cfg, group), "tags": run_tags(cfg)}
    if ensemble_fit:
        members = int(cfg.flow.ensemble)
        first = int(cfg.seed)
        settings.update(
            group=f"{group}-ensemble",
            name=f"{group}-ensemble-seeds{first}-{first + members - 1}",
            job_type="train-ensemble",
        )
    resumed = resumed_identity(cfg)
    settings.update({k: v for k, v in resumed.items() if v})
    return settings


def identity(logger) -> dict:
    """The metrics.json entries that record a W&B logger's run (for resuming and evaluating)."""
    run = logger.experiment
    return dict(zip(ID_KEYS, (run.id, run.group, run.name)))


def log_artifact(loggers, name: str, kind: str, paths: list[Path], metadata=None) -> None:
    """Files as one W&B artifact of ``kind`` linked to each W&B logger's run (offline runs keep
    it for ``wandb sync``); other loggers are skipped. Missing files are left out."""
    from pytorch_lightning.loggers import WandbLogger

    files = [Path(p) for p in paths if Path(p).is_file()]
    targets = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    if not files or not targets:
        return
    import wandb

    for logger in targets:
        artifact = wandb.Artifact(artifact_name(name), type=kind, metadata=metadata or {})
        for f in files:
            artifact.add_file(str(f), name=f.name)
        logger.experiment.log_artifact(artifact)


def artifact_name(name: str) -> str:
    """W&B artifact names take letters, digits, dashes, underscores and dots."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name)[:128]
