"""A multirun's jobs on disk: ``<sweep>/jobs/<num>.json``, one record per job Hydra launched,
written by the job itself (``running`` when it starts, then ``finished``, ``failed`` or
``interrupted``), so the records are the same with any sweeper (basic, Optuna, Nevergrad) and
any launcher (basic, joblib, submitit: a job in another process or on another machine writes its
own record). ``evaluate.py`` and the multirun's summary read them back.

Hydra keeps each job's config (``<job>/.hydra/``) and the sweep's (``multirun.yaml``) but no
job outcome: a failed job's traceback is only in its log, and a job that fails at start-up
leaves no run folder; hence these records.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from eqflow.io.metrics_file import write_json_atomic

log = logging.getLogger(__name__)

JOBS_FOLDER = "jobs"
FINISHED = "finished"


@dataclass
class JobRecord:
    """One job of a multirun: its number, the overrides that made it, its output folder."""

    sweep_dir: Path
    num: int
    overrides: list[str]
    output_dir: str

    @classmethod
    def of_current_job(cls) -> JobRecord | None:
        """The record of the Hydra job running in this process (None outside a multirun)."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
            return None
        hc = HydraConfig.get()
        return cls(
            Path(str(hc.sweep.dir)),
            int(hc.job.num),
            list(hc.overrides.task),
            str(hc.runtime.output_dir),
        )

    def write(self, status: str, error: str | None = None, objective: float | None = None):
        """``objective``: what the job returned to the sweeper (the ``optimized_metric``)."""
        write_json_atomic(
            {
                "num": self.num,
                "overrides": self.overrides,
                "output_dir": self.output_dir,
                "status": status,
                "error": error,
                "objective": objective,
            },
            self.sweep_dir / JOBS_FOLDER / f"{self.num}.json",
        )


def read_records(sweep_dir: str | Path) -> dict[int, dict]:
    """{job number: record} of the multirun at ``sweep_dir`` (unreadable records named in the
    log and left aside)."""
    records = {}
    for path in (Path(sweep_dir) / JOBS_FOLDER).glob("*.json"):
        try:
            record = json.loads(path.read_text())
            records[int(record["num"])] = record
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("Unreadable job record %s (left aside)", path)
    return dict(sorted(records.items()))


def varying(overrides: list[str], all_jobs: list[list[str]]) -> list[str]:
    """The overrides of one job that differ between the jobs of ``all_jobs`` (all of them when
    there is only one job)."""
    if len(all_jobs) < 2:
        return overrides
    seen: dict[str, set[str]] = {}
    for job in all_jobs:
        for o in job:
            key, _, value = o.partition("=")
            seen.setdefault(key, set()).add(value)
    return [o for o in overrides if len(seen[o.partition("=")[0]]) != 1]


def job_name(num: int, overrides: list[str]) -> str:
    return f"job {num} ({' '.join(overrides)})" if overrides else f"job {num}"


def unfinished_jobs(sweep_dir: str | Path) -> dict[str, str]:
    """{job name: why it has no finished run} for the jobs of the multirun at ``sweep_dir`` that
    failed, were interrupted or never ended, and for gaps in the job numbers (a job that never
    wrote its record); empty where the folder has no job records."""
    records = read_records(sweep_dir)
    every = [r.get("overrides", []) for r in records.values()]
    out = {}
    for num, record in records.items():
        status = record.get("status")
        if status == FINISHED:
            continue
        name = job_name(num, varying(record.get("overrides", []), every))
        if status == "running":
            out[name] = (
                "never ended (the multirun was stopped, or the process was killed): "
                "run that job again on its own"
            )
        else:
            out[name] = f"{status}: {record.get('error')}"
    for num in range(max(records, default=-1)):
        if num not in records:
            out[job_name(num, [])] = "left no record (it never started): run it again on its own"
    return out


def sweep_summary(sweep_dir: str | Path) -> str | None:
    """The closing lines of a multirun with failed jobs (None when every job finished)."""
    records = read_records(sweep_dir)
    failed = unfinished_jobs(sweep_dir)
    if not failed:
        return None
    lines = [f"  {name}: {why}" for name, why in failed.items()]
    return (
        f"[eqflow] {len(failed)} of {len(records)} jobs failed (the others finished; every "
        f"job's outcome is in {Path(sweep_dir) / JOBS_FOLDER}):\n" + "\n".join(lines)
    )
