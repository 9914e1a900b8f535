"""Hydra callbacks of train.py (conf/hydra/default.yaml): a run folder that already holds a run is
refused before Hydra writes into it, and a multirun goes on past a failing job, records every
job's outcome in ``<sweep>/jobs/`` and ends non-zero naming the jobs that failed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError

from eqflow.errors import StorageError
from eqflow.run_folders import existing_run_message, holds_a_run, runs_inside
from eqflow.storage import writable_folder
from eqflow.sweep_jobs import JOBS_FOLDER, job_name, planned_jobs, record_job, varying, write_plan


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
    """A multirun's jobs, each recorded in ``<sweep>/jobs/`` when it ends. A failed job does not
    stop the others (train.py raises instead of exiting in a multirun, and Hydra's basic launcher
    runs every job of a batch before it reports a failure); after the last job the multirun
    exits 1 with the list of failed jobs, before Hydra prints the first one's traceback."""

    def __init__(self) -> None:
        self.sweep_dir: Path | None = None
        self.plan: list[list[str]] | None = None
        self.ended = 0
        self.failed: list[str] = []

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        self.plan = planned_jobs(config)
        write_plan(self.sweep_dir, self.plan)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self.sweep_dir is None:  # a single run
            return
        self.ended += 1
        num = int(config.hydra.job.num)
        overrides = list(job_return.overrides or [])
        error, objective = None, None
        if job_return.status.name != "COMPLETED":
            error = f"{type(job_return._return_value).__name__}: {job_return._return_value}"
            self.failed.append(f"{job_name(num, varying(overrides, self.plan))}: {error}")
        elif isinstance(job_return.return_value, (int, float)):
            objective = float(job_return.return_value)
        record_job(
            self.sweep_dir, num, overrides, str(config.hydra.runtime.output_dir), error, objective
        )
        if self.plan is not None and self.ended == len(self.plan) and self.failed:
            print(
                f"[eqflow] {len(self.failed)} of {self.ended} jobs failed (the others "
                f"finished; every job's outcome is in {self.sweep_dir / JOBS_FOLDER}):\n  "
                + "\n  ".join(self.failed),
                file=sys.stderr,
            )
            sys.exit(1)
