"""Reading finished runs back: config, data, score model and flow of a run directory."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from eqflow.data import SnapshotDataModule
from eqflow.results import read_metrics

log = logging.getLogger(__name__)


class RunLoadError(RuntimeError):
    pass


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: DictConfig
    datamodule: SnapshotDataModule
    flow: torch.nn.Module
    metrics: dict


def load_config(run_dir: str | Path) -> DictConfig:
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.exists():
        raise RunLoadError(f"{run_dir} is not an eqflow run directory (no .hydra/config.yaml); "
                           f"pass a folder under outputs/runs or outputs/multirun")
    cfg = OmegaConf.load(path)
    # the run's own folder stands in for the Hydra-time interpolation of its output dir
    cfg.paths.output_dir = str(Path(run_dir))
    return cfg


def load_run(run_dir: str | Path, cache_dir: str | None = None) -> LoadedRun:
    """Rebuild a finished run's data, score model and flow (weights from ``flow.pt``)."""
    from eqflow.pipeline import build_flow, load_data, load_score

    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    if cache_dir is not None:
        cfg.paths.cache_dir = cache_dir
    weights = run_dir / "flow.pt"
    if not weights.exists():
        raise RunLoadError(f"{run_dir} has no flow.pt: the run did not finish; re-run it or resume "
                           f"it with ckpt_path={run_dir}/checkpoints/last.ckpt")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as exc:
        raise RunLoadError(f"{weights} is unreadable ({type(exc).__name__}: {exc}); re-run the job")
    system, snapshots = load_data(cfg)
    score, _ = load_score(cfg, system, snapshots)
    flow = build_flow(cfg, score, snapshots.x)
    flow.load_state_dict(state)
    flow.eval()
    dm = SnapshotDataModule(system, snapshots, cfg.flow.batch_size, seed=int(cfg.seed))
    return LoadedRun(run_dir, cfg, dm, flow, read_metrics(run_dir))
