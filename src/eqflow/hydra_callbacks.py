"""Hydra callbacks of train.py (conf/hydra/default.yaml): a run folder that already holds a run is
refused before Hydra writes into it, and the folder of a multirun that ended is kept for the
summary train.py prints of its jobs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError

from eqflow.errors import StorageError
from eqflow.io.run_folders import existing_run_message, holds_a_run, runs_inside
from eqflow.io.storage import writable_folder


def refuse(message: str) -> None:
    """Logging is not configured yet when Hydra calls these hooks: print, exit as bad input."""
    print(f"[eqflow] error: {message}", file=sys.stderr)
    sys.exit(2)


def resolved_dir(config: DictConfig, key: str) -> Path:
    """hydra.<key>.dir, resolved (eqflow's own folders are claimed then), and writable."""
    try:
        folder = Path(str(config.hydra[key].dir))
    except InterpolationResolutionError as exc:  # Hydra would only warn about a raise here
        cause = exc
        while cause is not None and not isinstance(cause, StorageError):
            cause = cause.__cause__ or cause.__context__
        refuse(str(cause if cause is not None else exc))
    try:
        writable_folder(folder, f"hydra.{key}.dir=<a writable folder>")
    except StorageError as exc:
        refuse(str(exc))
    return folder


class RunFolderGuard(Callback):
    """Nothing is overwritten: a run folder (hydra.run.dir) or a multirun folder
    (hydra.sweep.dir) that already holds a run is refused unless ``ckpt_path`` resumes it."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = resolved_dir(config, "run")
        if holds_a_run(folder) and not config.get("ckpt_path"):
            refuse(existing_run_message(folder, "hydra.run.dir"))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        folder = resolved_dir(config, "sweep")
        taken = runs_inside(folder)
        if taken and not config.get("ckpt_path"):
            refuse(
                f"{folder} already holds the runs of a multirun "
                f"({', '.join(p.name for p in taken)}); eqflow never overwrites one. "
                f"Fix: name a new folder "
                f"(hydra.sweep.dir=<new folder>, or leave it out for a fresh timestamped one), "
                f"or delete the folder yourself if it is no longer wanted"
            )


class SweepJobs(Callback):
    """Remembers the multirun's folder, so that train.py can print the summary of its jobs and
    exit 1 when one failed, after Hydra has returned (the jobs write their own records in
    ``<sweep>/jobs/``, :mod:`eqflow.sweep_jobs`; nothing here exits or raises)."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        ENDED_SWEEPS.clear()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        ENDED_SWEEPS.append(Path(str(config.hydra.sweep.dir)))


# the folders of the multiruns Hydra ended in this process (read by train.py's __main__)
ENDED_SWEEPS: list[Path] = []
