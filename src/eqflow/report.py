"""Where results go: a run's metrics.json (merged, written atomically), text and JSON files,
the loggers (W&B, CSV) and the source's commit."""

from __future__ import annotations

import json
import math
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.loggers import WandbLogger

from eqflow.run_folders import ENSEMBLE_MARKER
from eqflow.storage import atomic_write
from eqflow.wandb_runs import log_artifact


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def write_json_atomic(data: dict, path: str | os.PathLike) -> None:
    write_text_atomic(path, json.dumps(_jsonable(data), indent=2, sort_keys=True))


def ensemble_member_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The metrics of every member of the ensemble run in ``run_dir`` (none for a run that is not
    an ensemble)."""
    marker = Path(run_dir) / ENSEMBLE_MARKER
    if not marker.exists():
        return []
    return [read_metrics(Path(run_dir) / f) for f in json.loads(marker.read_text())["members"]]


def read_metrics(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}). Fix: move it aside (mv {path} "
            f"{path}.corrupt); evaluate.py then measures the run again from its "
            f"flow.pt"
        ) from exc


def update_metrics(run_dir: str | os.PathLike, values: dict) -> dict:
    """Merge ``values`` into ``run_dir/metrics.json`` and return the whole record (under a file
    lock, so two processes writing one run directory do not lose each other's values)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(run_dir) / ".metrics.json.lock")):
        merged = read_metrics(run_dir)
        merged.update(_jsonable(values))
        write_json_atomic(merged, Path(run_dir) / "metrics.json")
    return merged


def scalars(values: dict) -> dict[str, float]:
    """The finite scalar entries of ``values`` (what loggers can chart)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def log_to_loggers(loggers, values: dict, step: int | None = None) -> None:
    row = scalars(values)
    for logger in loggers:
        if row:
            logger.log_metrics(row, step=step)
        if isinstance(logger, WandbLogger):
            summary = logger.experiment.summary
            for k, v in row.items():
                summary[k] = v


def log_figure(loggers, key: str, path: str | os.PathLike) -> None:
    """Send a saved figure to every logger that takes images (W&B); it is on disk already."""
    for logger in loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[str(path)])


def log_video(loggers, key: str, path: str | os.PathLike) -> None:
    """Send a saved animation (GIF or MP4) to every W&B logger as a video."""
    import wandb

    for logger in loggers:
        if isinstance(logger, WandbLogger):
            fmt = Path(path).suffix.lstrip(".") or "gif"
            logger.experiment.log({key: wandb.Video(str(path), format=fmt)})


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std of the finite values (std 0 for one value, NaNs for none)."""
    xs = [float(x) for x in values if math.isfinite(float(x))]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)


def flatten(tree: Any, prefix: str = "") -> dict:
    """``{"a": {"b": 1}} -> {"a.b": 1}`` (lists kept as values)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out = {}
    for k, v in tree.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def build_loggers(cfg: DictConfig, log_config: bool = True) -> list:
    """The loggers ``cfg.logger`` names (``logger=wandb|csv|none``), with the flattened config
    as their hyper-parameters. A W&B logger is placed by :func:`eqflow.wandb_runs.wandb_settings`
    (group, name, tags, a resumed run's id) where its config leaves them unset; an ensemble's
    own run (its fit) stays out of its members' group."""
    from eqflow.wandb_runs import wandb_settings

    members = int(OmegaConf.select(cfg, "flow.ensemble", default=1) or 1)
    loggers = []
    for key, node in (cfg.get("logger") or {}).items():
        if not node:
            continue
        extra = {}
        if key == "wandb":
            placed = wandb_settings(cfg, ensemble_fit=members > 1)
            extra = {k: v for k, v in placed.items() if k in ("id", "resume") or not node.get(k)}
        loggers.append(instantiate(node, **extra))
    if log_config:
        flat = flatten(OmegaConf.to_container(cfg, resolve=True))
        for logger in loggers:
            logger.log_hyperparams(flat)
    return loggers


def wandb_identity(loggers: list) -> dict:
    """The W&B run id, group and name of the W&B logger among ``loggers`` (for metrics.json)."""
    from eqflow.wandb_runs import identity

    return next((identity(lg) for lg in loggers if isinstance(lg, WandbLogger)), {})


def finish_loggers(loggers: list, status: str = "success") -> None:
    for logger in loggers:
        logger.finalize(status)
        if isinstance(logger, WandbLogger):
            import wandb

            wandb.finish(exit_code=0 if status == "success" else 1)


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
    loggers = [
        instantiate(node, **overrides.get(name, {}))
        for name, node in (cfg.get("logger") or {}).items()
        if node
    ]
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
