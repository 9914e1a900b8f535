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


def runs_with_metrics(run_dirs: list[Path], names: dict[Path, str], key: str, missing: str,
                      measure=None, remeasure: bool = False,
                      ) -> tuple[list[tuple[str, DictConfig, dict]], dict[str, str]]:
    """``(name, config, metrics)`` of each run whose metrics.json holds ``key``; a run without it
    (every run, with ``remeasure``) is measured by ``measure(run_dir, name)`` when given. Runs that cannot be read, or still lack
    ``key``, go to the second value with the reason (``missing`` says what their lack means):
    one bad run never stops a table."""
    found, failed = [], {}
    for run_dir in run_dirs:
        name = names[run_dir]
        try:
            cfg = load_config(run_dir)
            metrics = read_metrics(run_dir)
            if measure is not None and (remeasure or key not in metrics):
                metrics = measure(run_dir, name)
            if key not in metrics:
                raise ValueError(f"no {key}: {missing}")
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
            log.warning("Leaving out run %s: %s", name, failed[name])
            continue
        found.append((name, cfg, metrics))
    return found, failed
