"""Reading finished runs and sweeps back: a run directory's config, metrics, data, score model
and flow; a sweep's runs, each named by its path below the sweep folder.

Reading never trains: a run whose score model is not in the cache is reported with the fix.
A broken or unfinished run never stops the reading of a sweep: it is reported by name with the
reason, and the rest are returned."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from eqflow.compat import is_unmarked_ensemble, upgrade_config
from eqflow.data import SnapshotData
from eqflow.io.metrics_file import read_metrics
from eqflow.io.run_folders import ENSEMBLE_MARKER
from eqflow.protocols.runner import measure_and_record
from eqflow.stages.building import build_flow, build_protocols
from eqflow.stages.data import load_data
from eqflow.stages.score_cache import MissingScoreError, read_score, score_key

log = logging.getLogger(__name__)


class RunLoadError(RuntimeError):
    pass


@dataclass
class LoadedRun:
    run_dir: Path
    cfg: DictConfig
    data: SnapshotData
    flow: torch.nn.Module
    metrics: dict


def load_config(run_dir: str | Path) -> DictConfig:
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.exists():
        raise RunLoadError(
            f"{run_dir} is not an eqflow run directory (no .hydra/config.yaml); "
            f"pass a folder under outputs/runs or outputs/multirun"
        )
    cfg = upgrade_config(OmegaConf.load(path))
    # the run's own folder stands in for the Hydra-time interpolation of its output dir
    cfg.paths.output_dir = str(Path(run_dir))
    return cfg


def load_run(
    run_dir: str | Path, cache_dir: str | None = None, need_metrics: bool = True
) -> LoadedRun:
    """Rebuild a finished run's data, score model (from the cache) and flow (from ``flow.pt``).
    A corrupt metrics.json is a RunLoadError unless ``need_metrics`` is false (re-measuring)."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir)
    if cache_dir is not None:
        cfg.paths.cache_dir = cache_dir
    weights = run_dir / "flow.pt"
    if not weights.exists():
        raise RunLoadError(
            f"{run_dir} has no flow.pt: the run did not finish; re-run it or resume "
            f"it with ckpt_path={run_dir}/checkpoints/last.ckpt"
        )
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)["state_dict"]
    except Exception as exc:
        raise RunLoadError(f"{weights} is unreadable ({type(exc).__name__}: {exc}); re-run the job")
    system, snapshots = load_data(cfg)
    try:
        score, _ = read_score(cfg, snapshots)
    except MissingScoreError as exc:
        raise RunLoadError(str(exc)) from exc
    flow = build_flow(cfg, score, snapshots.x)
    flow.load_state_dict(state)
    flow.eval()
    try:
        metrics = read_metrics(run_dir)
    except ValueError as exc:  # a corrupt metrics.json: named, never read as missing values
        if need_metrics:
            raise RunLoadError(str(exc)) from exc
        metrics = {}
    return LoadedRun(run_dir, cfg, SnapshotData(system, snapshots), flow, metrics)


def measure_run(
    run_dir: str | Path,
    output_dir: str | Path,
    cache_dir: str | None = None,
    loggers: list = (),
    settings: dict | None = None,
) -> dict:
    """Run a finished run's protocols again (its own settings and seed, with ``settings``
    overriding config keys, e.g. ``{"measure.patterns.n_starts": 8}``) into ``output_dir``;
    returns the metrics written there."""
    run = load_run(run_dir, cache_dir, need_metrics=False)
    try:
        read_metrics(run_dir)
    except ValueError as exc:  # measured again below, from the run's flow.pt and config
        log.warning("The run's own metrics are unreadable, so they are measured anew: %s", exc)
    with open_dict(run.cfg):
        for key, value in (settings or {}).items():
            OmegaConf.update(run.cfg, key, value, merge=False)
    protocols, _ = build_protocols(run.cfg)
    log.info("Measuring %s (%s)", run_dir, ", ".join(p.name for p in protocols))
    measure_and_record(protocols, run.flow, run.data, int(run.cfg.seed), output_dir, loggers)
    return read_metrics(output_dir)


def runs_with_metrics(
    run_dirs: list[Path],
    names: dict[Path, str],
    key: str,
    missing: str,
    measure=None,
    remeasure: bool = False,
) -> tuple[list[tuple[str, DictConfig, dict]], dict[str, str]]:
    """``(name, config, metrics)`` of each run whose metrics.json holds ``key``; a run without it
    (every run, with ``remeasure``) is measured by ``measure(run_dir, name)`` when given. Runs
    that cannot be read, or still lack ``key``, go to the second value with the reason
    (``missing`` says what their lack means): one bad run never stops a table."""
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


def run_dirs(path: str | Path) -> list[Path]:
    """The run directories under ``path`` (those holding ``.hydra/config.yaml``), in natural
    order of their names (job numbers, ``seed<s>``). ``path`` may itself be one run, an
    ensemble run (its members are the runs), or a folder of symbolic links to runs (to put
    separate runs in one table)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(
            f"sweep={path} is not a directory; pass a run or multirun folder, "
            f"e.g. outputs/multirun/lorenz/<date time>"
        )
    if (path / ".hydra" / "config.yaml").exists() and _kind(
        path / ".hydra" / "config.yaml"
    ) == "run":
        return [path]
    configs = [
        Path(root) / "config.yaml"
        for root, _, files in os.walk(path, followlinks=True)
        if Path(root).name == ".hydra" and "config.yaml" in files
    ]  # links to runs too
    found = sorted({p.parent.parent for p in configs if _kind(p) == "run"}, key=_natural)
    if not found:
        raise FileNotFoundError(
            f"no runs under {path} (no */.hydra/config.yaml); pass the folder "
            f"a multirun wrote, e.g. outputs/multirun/lorenz/<date time>"
        )
    return found


def _natural(path: Path) -> tuple:
    return (len(path.parts), [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))])


def _kind(path: Path) -> str:
    """``run`` for a train.py run's config; ``ensemble`` for an ensemble run (its members are the
    runs; marked by the members.json it writes); ``other`` for evaluate.py's own output folders
    (a config with ``sweep`` and no flow)."""
    if (path.parent.parent / ENSEMBLE_MARKER).exists():
        return "ensemble"
    try:
        cfg = OmegaConf.load(path)
    except Exception:  # unreadable: let load_run report it by name
        return "run"
    if "sweep" in cfg and "flow" not in cfg:
        return "other"
    return "ensemble" if is_unmarked_ensemble(cfg) else "run"


@dataclass
class Sweep:
    root: Path
    runs: list[LoadedRun] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # run name -> why it was left out

    @property
    def names(self) -> list[str]:
        return [self.name_of(r.run_dir) for r in self.runs]

    def name_of(self, run_dir: Path) -> str:
        return run_name(self.root, run_dir)


def run_name(root: Path, run_dir: Path) -> str:
    """A run's name within its sweep: its path below the sweep folder (or its own name)."""
    return str(run_dir.relative_to(root)) if run_dir != root else run_dir.name


def named_run_dirs(path: str | Path) -> dict[Path, str]:
    """:func:`run_dirs` with each run's name within the sweep."""
    root = Path(path)
    return {d: run_name(root, d) for d in run_dirs(root)}


def load_sweep(path: str | Path, cache_dir: str | None = None) -> Sweep:
    """Load every run of a sweep; runs that cannot be loaded go to ``failed`` with the reason."""
    root = Path(path)
    sweep = Sweep(root)
    for run_dir in run_dirs(root):
        name = sweep.name_of(run_dir)
        try:
            sweep.runs.append(load_run(run_dir, cache_dir))
        except Exception as exc:  # one bad run must not stop the evaluation of the others
            reason = f"{type(exc).__name__}: {exc}"
            sweep.failed[name] = reason
            log.warning("Leaving out run %s: %s", name, reason)
    if not sweep.runs:
        raise RuntimeError(
            f"none of the {len(sweep.failed)} runs under {root} could be loaded: "
            + "; ".join(f"{k}: {v}" for k, v in sweep.failed.items())
        )
    _check_same_score(sweep)
    return sweep


def _check_same_score(sweep: Sweep) -> None:
    """The cross-run tables compare flows of one score model on one dataset."""
    keys = {}
    for run in sweep.runs:
        keys.setdefault(repr(score_key(run.cfg)), []).append(sweep.name_of(run.run_dir))
    if len(keys) > 1:
        groups = "; ".join(", ".join(v) for v in keys.values())
        raise RuntimeError(
            f"the runs under {sweep.root} use different data or score models "
            f"({groups}); evaluate each group of runs on its own"
        )
