"""An analysis's report: what it leaves (:class:`Report`), written as files, summary.json and
report.md, and logged to the loggers of the evaluation's config."""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from eqflow.io.loggers import finish_loggers, flatten, instantiate_loggers, scalars
from eqflow.io.metrics_file import write_json_atomic, write_text_atomic
from eqflow.io.wandb_runs import log_artifact


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std of the finite values (std 0 for one value, NaNs for none)."""
    xs = [float(x) for x in values if math.isfinite(float(x))]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def git_commit() -> str:
    """The source's commit, with ``-dirty`` when tracked files have changes; ``unknown``
    outside git. (W&B records the commit of a run's working directory too, but only with the
    W&B logger on and only of the folder the command ran in; report.md needs eqflow's own,
    with any logger.)"""

    def git(*args):
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


@dataclass
class Report:
    """What an analysis of a sweep leaves, before it is written: ``files`` (name -> text: the
    tables as Markdown and CSV), ``sections`` of report.md (heading, Markdown), ``summary`` for
    summary.json, ``headline`` (the file printed to the console), and for the loggers ``tables``
    (name -> (columns, rows)) and ``scalars``. Figures are already in the output folder."""

    root: Path
    group: str
    headline: str
    summary: dict
    files: dict[str, str] = field(default_factory=dict)
    sections: list[tuple[str, str]] = field(default_factory=list)
    tables: dict[str, tuple[list[str], list[list]]] = field(default_factory=dict)
    scalars: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    run_config: DictConfig | None = None


def write_report(report: Report, out: Path, cfg: DictConfig) -> Path:
    """Write the report's files, summary.json and report.md into ``out``; log it to the loggers
    ``cfg.logger`` names (one W&B run of job type ``evaluate`` in the runs' group). Returns
    the path of the headline file."""
    out = Path(out)
    commit = git_commit()
    for name, text in report.files.items():
        write_text_atomic(out / name, text)
    write_json_atomic(
        {**report.summary, "sweep": str(report.root), "failed": report.failed, "commit": commit},
        out / "summary.json",
    )
    lines = [
        f"# Evaluation of `{report.root}`",
        "",
        f"- commit: `{commit}`",
        f"- left out: {len(report.failed)}",
        *(f"  - `{k}`: {v}" for k, v in report.failed.items()),
        "",
    ]
    for heading, body in report.sections:
        lines += [f"## {heading}", "", body.rstrip(), ""]
    lines += ["## Configuration", "", "```yaml", OmegaConf.to_yaml(cfg).strip(), "```", ""]
    if report.run_config is not None:
        lines += [
            "Run configuration (first run):",
            "",
            "```yaml",
            OmegaConf.to_yaml(report.run_config).strip(),
            "```",
            "",
        ]
    write_text_atomic(out / "report.md", "\n".join(lines))
    log_report(report, out, cfg)
    return out / report.headline


def log_report(report: Report, out: Path, cfg: DictConfig) -> None:
    """The report's tables, figures and scalars to each logger of ``cfg.logger``."""
    overrides = {
        "wandb": {
            "group": report.group,
            "job_type": "evaluate",
            "name": f"{report.group}-evaluate-{out.name}",
            "tags": [str(t) for t in (cfg.get("tags") or [])],
            "save_dir": str(out),
        },
        "csv": {"save_dir": str(out)},
    }
    loggers = instantiate_loggers(cfg, overrides)
    for logger in loggers:
        logger.log_hyperparams(flatten(OmegaConf.to_container(cfg, resolve=True)))
        if isinstance(logger, WandbLogger):
            import wandb

            logger.experiment.log(
                {
                    **{
                        name: wandb.Table(columns=cols, data=rows)
                        for name, (cols, rows) in report.tables.items()
                    },
                    **{f"figures/{p.stem}": wandb.Image(str(p)) for p in sorted(out.glob("*.png"))},
                }
            )
            for k, v in report.scalars.items():
                logger.experiment.summary[k] = v
        else:
            logger.log_metrics(scalars(report.scalars))
    report_files = [out / "report.md", out / "summary.json", *sorted(out.glob("*.csv"))]
    log_artifact(loggers, f"evaluation-{report.group}-{out.name}", "evaluation", report_files)
    finish_loggers(loggers)


def report_group(run_cfg: DictConfig) -> str:
    """The W&B group an evaluation logs into: its runs' (``logger.wandb.group``, else the
    experiment's ``name``), so the evaluation sits beside the runs it read."""
    wandb_cfg = (run_cfg.get("logger") or {}).get("wandb") or {}
    return str(wandb_cfg.get("group") or run_cfg.get("name", "eqflow"))


def csv_text(columns: list[str], rows: list[dict]) -> str:
    """``rows`` as CSV with a header (floats to 6 significant digits): every table's CSV."""

    def cell(v) -> str:
        return f"{v:.6g}" if isinstance(v, float) else str(v)

    return "".join(
        ",".join(line) + "\n" for line in [columns, *([cell(r[c]) for c in columns] for r in rows)]
    )
