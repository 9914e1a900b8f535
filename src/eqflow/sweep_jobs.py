"""A multirun's jobs on disk: ``<sweep>/jobs/plan.json`` (every job's overrides, written when the
multirun starts) and ``<sweep>/jobs/<num>.json`` (each job's outcome, written when it ends), so
that ``evaluate.py`` can name the jobs that failed or never ran, although a job that fails at
start-up leaves no run folder of its own."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from eqflow.report import write_json_atomic

log = logging.getLogger(__name__)

JOBS_FOLDER = "jobs"


def planned_jobs(config: DictConfig) -> list[list[str]] | None:
    """The overrides of every job of the multirun ``config`` describes (Hydra's basic sweeper's
    expansion); None where it cannot be worked out (another sweeper, a range sweep)."""
    try:
        from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
        from hydra.core.override_parser.overrides_parser import OverridesParser

        task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        overrides = OverridesParser.create().parse_overrides(list(task))
        return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]
    except Exception as exc:  # the plan is a convenience: the sweep runs without it
        log.warning("Could not list the multirun's jobs in advance: %s", exc)
        return None


def varying(overrides: list[str], plan: list[list[str]] | None) -> list[str]:
    """The overrides of one job that differ between the jobs of ``plan`` (all without one)."""
    if not plan:
        return overrides
    seen: dict[str, set[str]] = {}
    for job in plan:
        for o in job:
            key, _, value = o.partition("=")
            seen.setdefault(key, set()).add(value)
    return [o for o in overrides if len(seen.get(o.partition("=")[0], ())) != 1]


def job_name(num: int, overrides: list[str]) -> str:
    return f"job {num} ({' '.join(overrides)})" if overrides else f"job {num}"


def write_plan(sweep_dir: Path, jobs: list[list[str]] | None) -> None:
    if jobs is not None:
        write_json_atomic({"jobs": jobs}, sweep_dir / JOBS_FOLDER / "plan.json")


def record_job(
    sweep_dir: Path,
    num: int,
    overrides: list[str],
    output_dir: str,
    error: str | None,
    objective: float | None = None,
) -> None:
    """jobs/<num>.json; ``objective``: what the job returned to the sweeper (the value of
    ``optimized_metric``)."""
    write_json_atomic(
        {
            "num": num,
            "overrides": overrides,
            "output_dir": output_dir,
            "status": "failed" if error else "finished",
            "error": error,
            "objective": objective,
        },
        sweep_dir / JOBS_FOLDER / f"{num}.json",
    )


def unfinished_jobs(sweep_dir: str | Path) -> dict[str, str]:
    """{job name: why it has no finished run} for the jobs of the multirun at ``sweep_dir`` that
    failed or never ran; empty where the folder has no job records."""
    folder = Path(sweep_dir) / JOBS_FOLDER
    plan_path = folder / "plan.json"
    records = {}
    for path in folder.glob("*.json"):
        if path.name == "plan.json":
            continue
        try:
            record = json.loads(path.read_text())
            records[int(record["num"])] = record
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("Unreadable job record %s (left aside)", path)
    plan = []
    if plan_path.exists():
        try:
            plan = json.loads(plan_path.read_text())["jobs"]
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("Unreadable job plan %s (left aside)", plan_path)
    out = {}
    for num, record in sorted(records.items()):
        if record.get("status") != "finished":
            name = job_name(num, varying(record.get("overrides", []), plan))
            out[name] = f"failed: {record.get('error')}"
    if plan:
        for num, overrides in enumerate(plan):
            if num not in records:
                out[job_name(num, varying(overrides, plan))] = (
                    "never ran or never ended (the multirun was stopped before it finished): "
                    "run that job again on its own"
                )
    return out
