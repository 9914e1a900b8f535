"""evaluate.py's two jobs: analyse a sweep (one path for every kind of study), or measure one
finished run again."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from eqflow.analysis import analyse
from eqflow.config import EVALUATE_RULES, validate
from eqflow.report import write_report
from eqflow.runs import measure_run
from eqflow.storage import writable_folder
from eqflow.sweep_jobs import unfinished_jobs

log = logging.getLogger(__name__)


def evaluate_sweep(cfg: DictConfig) -> dict:
    """The analysis of the sweep (or run) at ``cfg.sweep``, written to ``cfg.paths.output_dir``
    (tables as Markdown and CSV, figures, summary.json, report.md) and to the loggers.
    Returns the summary."""
    validate(cfg, EVALUATE_RULES)
    out = writable_folder(cfg.paths.output_dir, "hydra.run.dir=<another folder>")
    jobs = unfinished_jobs(cfg.sweep) if Path(cfg.sweep).is_dir() else {}
    for name, why in jobs.items():
        log.warning("Job without a finished run: %s: %s", name, why)
    try:
        report = analyse(cfg.sweep, cfg, out)
    except (FileNotFoundError, RuntimeError) as exc:
        if not jobs:
            raise
        raise RuntimeError(
            f"{exc}; the multirun's jobs without a finished run: "
            + "; ".join(f"{k}: {v}" for k, v in jobs.items())
        ) from exc
    report.failed = {**jobs, **report.failed}
    headline = write_report(report, out, cfg)
    log.info("Evaluation written to %s", out)
    if report.failed:
        log.warning(
            "Left out of the evaluation (%d): %s", len(report.failed), "; ".join(report.failed)
        )
    return {
        **report.summary,
        "sweep": str(report.root),
        "failed": report.failed,
        "headline": str(headline),
    }


def evaluate_run(
    run_dir: str | Path, output_dir: str | Path, cache_dir: str | None = None, loggers: list = ()
) -> dict:
    """Re-compute a finished run's end-of-fit metrics into ``output_dir``."""
    return measure_run(run_dir, output_dir, cache_dir, loggers)
