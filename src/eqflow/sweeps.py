"""Reading a sweep (a Hydra multirun directory, or one run directory) back, run by run.

A broken or unfinished run never stops the reading: it is reported by name with the reason,
and the rest are returned.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from eqflow.runs import LoadedRun, load_run

log = logging.getLogger(__name__)


def run_dirs(path: str | Path) -> list[Path]:
    """The run directories under ``path`` (those holding ``.hydra/config.yaml``), sorted by
    job number where the names are numbers. ``path`` may itself be one run, or a folder of
    symbolic links to runs (to put separate runs in one table)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"sweep={path} is not a directory; pass a run or multirun folder, "
                                f"e.g. outputs/multirun/lorenz/<date time>")
    if (path / ".hydra" / "config.yaml").exists():
        return [path]
    configs = [Path(root) / "config.yaml" for root, _, files in os.walk(path, followlinks=True)
               if Path(root).name == ".hydra" and "config.yaml" in files]  # links to runs too
    found = sorted({p.parent.parent for p in configs if _is_train_config(p)},
                   key=lambda p: (len(p.parts), int(p.name) if p.name.isdigit() else 1 << 30, str(p)))
    if not found:
        raise FileNotFoundError(f"no runs under {path} (no */.hydra/config.yaml); pass the folder "
                                f"a multirun wrote, e.g. outputs/multirun/lorenz/<date time>")
    return found


def _is_train_config(path: Path) -> bool:
    """True for a train.py run's config (evaluate.py's own output folders are not runs)."""
    try:
        text = path.read_text()
    except OSError:
        return True  # unreadable: let load_run report it by name
    return "\nsweep:" not in "\n" + text


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
        raise RuntimeError(f"none of the {len(sweep.failed)} runs under {root} could be loaded: "
                           + "; ".join(f"{k}: {v}" for k, v in sweep.failed.items()))
    _check_same_score(sweep)
    return sweep


def _check_same_score(sweep: Sweep) -> None:
    """The cross-run tables compare flows of one score model on one dataset."""
    from eqflow.pipeline import score_key

    keys = {}
    for run in sweep.runs:
        keys.setdefault(repr(score_key(run.cfg)), []).append(sweep.name_of(run.run_dir))
    if len(keys) > 1:
        groups = "; ".join(", ".join(v) for v in keys.values())
        raise RuntimeError(f"the runs under {sweep.root} use different data or score models "
                           f"({groups}); evaluate each group of runs on its own")
