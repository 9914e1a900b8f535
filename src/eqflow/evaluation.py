"""evaluate.py's two jobs: analyse a sweep (one path for every kind of study), or measure one
finished run again."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from eqflow.analysis import analyse
from eqflow.analysis.report import Report, csv_text, write_report
from eqflow.config import EVALUATE_RULES, validate
from eqflow.io.metrics_file import read_metrics
from eqflow.io.storage import writable_folder
from eqflow.runs import load_config, measure_run, named_run_dirs
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
    add_runs_table(report, cfg.sweep)
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


# the columns of the per-run table, where any run measured them
RUN_COLUMNS = (
    "mmd/final",
    "mmd/noise_floor",
    "residual/relative",
    "fidelity/cos_truth",
    "lyapunov/max",
    "creatures/whole_share_late",
    "time/total_s",
)


def add_runs_table(report: Report, sweep: str | Path) -> None:
    """One row per run of the sweep with its key metrics (``runs.csv`` and the W&B table
    ``runs``); the runs' recorded W&B group becomes the report's, so the evaluation's W&B run
    sits beside the runs it evaluates."""
    rows, groups = [], []
    for run_dir, name in named_run_dirs(sweep).items():
        try:
            metrics = read_metrics(run_dir)
        except ValueError:  # already named in the report's left-out runs
            continue
        groups.append(metrics.get("wandb/group"))
        rows.append({"run": name, "seed": load_config(run_dir).get("seed"), **metrics})
    columns = ["run", "seed", *(c for c in RUN_COLUMNS if any(c in r for r in rows))]
    table = [{c: r.get(c, "") for c in columns} for r in rows]
    report.tables["runs"] = (columns, [[r[c] for c in columns] for r in table])
    report.files["runs.csv"] = csv_text(columns, table)
    if recorded := next((g for g in groups if g), None):
        report.group = recorded
