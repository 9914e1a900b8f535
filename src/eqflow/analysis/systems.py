"""One table across dynamical systems (evaluate.py on a multirun over ``data.system``).

The runs are grouped by system; each group is evaluated as a uniqueness study of its own (its
full report in ``<out>/<system>/``), and one row per system is drawn from it: the Table 1
similarities (learned-learned, learned/training-free/random against the truth, learned-score),
the share of learned flows with a positive largest exponent beside the true system's exponent
(measured here on its field with the same estimator, and a published value where one exists),
and MMD^2 to the start set at the last step.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from eqflow.analysis import uniqueness
from eqflow.analysis.report import Report, csv_text, report_group, write_report
from eqflow.data.dysts_systems import PUBLISHED_LYAPUNOV
from eqflow.metrics.lyapunov import max_lyapunov
from eqflow.runs import load_config, load_run, named_run_dirs

log = logging.getLogger(__name__)

COLUMNS = (
    "learned | learned",
    "learned | ground truth",
    "training-free | ground truth",
    "random | ground truth",
    "learned | score",
)


def system_name(cfg: DictConfig) -> str | None:
    """The dynamical system a run learned from: dysts' name, or the ODE field's class."""
    data = cfg.get("data") or {}
    if data.get("system") is not None:
        return str(data.system)
    field = data.get("vector_field")
    if field is not None and field.get("_target_"):
        return str(field._target_).rsplit(".", 1)[-1]
    return None


def group_by_system(root: Path) -> tuple[dict[str, list[tuple[Path, str]]], dict[str, str]]:
    groups: dict[str, list[tuple[Path, str]]] = {}
    failed: dict[str, str] = {}
    for run_dir, name in named_run_dirs(root).items():
        try:
            system = system_name(load_config(run_dir))
        except Exception as exc:  # noqa: BLE001 - one bad run never stops the table
            failed[name] = f"{type(exc).__name__}: {exc}"
            continue
        if system is None:
            failed[name] = "its data is not a dynamical system (no data.system or vector_field)"
            continue
        groups.setdefault(system, []).append((run_dir, name))
    return groups, failed


def true_exponent(
    run_dir: Path, cache_dir: str | None, periods: float = 200.0, seed: int = 0
) -> float:
    """The largest exponent of the run's ground-truth field (standardised coordinates, the
    system's own time): 8 trajectories from snapshots, RK4 at the data's step, ``periods``
    dominant periods after a burn-in of 20."""
    run = load_run(run_dir, cache_dir)
    field, system = run.data.true_field(), run.data.system
    dt = float(system.dt)
    per_period = float(getattr(system, "period", 100 * dt)) / dt
    g = torch.Generator().manual_seed(seed)
    x0 = run.data.x[torch.randperm(len(run.data.x), generator=g)[:8]].double()
    res = max_lyapunov(
        field, x0, dt, int(periods * per_period), burn_in=int(20 * per_period), generator=g
    )
    return float(res["lyapunov"])


def _table1_value(summary: dict, a: str, b: str) -> float:
    table = summary["table1"]
    cell = table.get(f"{a} | {b}") or table.get(f"{b} | {a}")
    return float(cell["mean"]) if cell else math.nan


def analyse(root: Path, cfg: DictConfig, out: Path) -> Report:
    """The cross-system table for the runs under ``root``."""
    start = time.perf_counter()
    groups, failed = group_by_system(root)
    if not groups:
        raise RuntimeError(
            f"no run under {root} learned from a dynamical system: "
            + "; ".join(f"{k}: {v}" for k, v in failed.items())
        )
    quiet = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    with open_dict(quiet):
        quiet.logger = {}  # the per-system reports are files; the cross table goes to the loggers
    rows, timings = [], {}
    for system, members in groups.items():
        t = time.perf_counter()
        report = _system_study(system, members, quiet, out)
        failed |= {f"{system}/{k}": v for k, v in report.failed.items()}
        rows.append(system_row(system, members, report.summary, cfg))
        timings[system] = time.perf_counter() - t
    first_cfg = load_config(next(iter(groups.values()))[0][0])
    timings = {"per_system_s": timings, "total_s": time.perf_counter() - start}
    return _systems_report(Path(root), rows, first_cfg, failed, timings)


def _system_study(system: str, members: list[tuple[Path, str]], quiet: DictConfig, out: Path):
    """One system's runs linked under ``out/systems/<system>`` and evaluated as a uniqueness
    study, its report written to ``out/<system>``."""
    links = out / "systems" / system
    links.mkdir(parents=True, exist_ok=True)
    for run_dir, name in members:
        link = links / name.replace("/", "_")
        if not link.exists():
            os.symlink(Path(run_dir).resolve(), link, target_is_directory=True)
    report = uniqueness.analyse(links, quiet, out / system)
    write_report(report, out / system, quiet)
    return report


def system_row(
    system: str, members: list[tuple[Path, str]], s: dict, cfg: DictConfig
) -> dict[str, object]:
    """The table's row of one system from its study's summary ``s``."""
    ch = s.get("chaos", {})
    published = PUBLISHED_LYAPUNOV.get(system)
    params = load_config(members[0][0]).data.get("parameters") or None
    mmd = s["mmd_final"]
    return {
        "system": system,
        "flows": len(members),
        **{c: _table1_value(s, *c.split(" | ")) for c in COLUMNS},
        "positive": ch.get("n_positive", 0),
        "finite": ch.get("n_finite", 0),
        "true_exponent": true_exponent(
            members[0][0],
            cfg.paths.get("cache_dir"),
            float((cfg.get("systems") or {}).get("true_exponent_periods", 200)),
            int(cfg.seed),
        ),
        "published_exponent": published[0] if published and not params else math.nan,
        "mmd_learned": mmd.get("learned", {}).get("mean", math.nan),
        "mmd_training_free": mmd.get("training-free", {}).get("mean", math.nan),
        "mmd_random": mmd.get("random", {}).get("mean", math.nan),
        "residual_learned": s.get("residual_median", {}).get("learned", math.nan),
        "sustained": ch.get("n_sustained", math.nan),
    }


def _systems_report(
    root: Path, rows: list[dict], first_cfg: DictConfig, failed: dict, timings: dict
) -> Report:
    md = markdown(rows)
    keys = list(rows[0])
    return Report(
        root=root,
        group=report_group(first_cfg),
        headline="systems.md",
        failed=failed,
        run_config=first_cfg,
        summary={"kind": "systems", "systems": rows, "timings": timings},
        files={"systems.md": md, "systems.csv": csv_text(keys, rows)},
        sections=[
            (
                "One table across systems",
                md + "\n[CSV](systems.csv); each system's full "
                "report (Table 1, chaos, MMD, UMAP) is in its own folder.",
            )
        ],
        tables={"systems": (keys, [[r[k] for k in keys] for r in rows])},
        scalars={
            f"systems/{r['system']}/{k}": r[k]
            for r in rows
            for k in keys
            if isinstance(r[k], float)
        },
    )


def _count(value, total: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{int(value)} of {total}"


def markdown(rows: list[dict]) -> str:
    def f(v: float) -> str:
        return "—" if not math.isfinite(v) else f"{v:.3f}"

    lines = [
        "| system | flows | learned-learned | learned-truth | training-free-truth | "
        "random-truth | learned-score | exponent > 0 | true exponent (ours / published) | "
        "MMD² learned / training-free / random | residual / v.s (learned) | sustained |",
        "|---|" + "---|" * 11,
    ]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['flows']} | {f(r['learned | learned'])} | "
            f"{f(r['learned | ground truth'])} | {f(r['training-free | ground truth'])} | "
            f"{f(r['random | ground truth'])} | {f(r['learned | score'])} | "
            f"{r['positive']} of {r['flows']} | {f(r['true_exponent'])} / "
            f"{f(r['published_exponent'])} | {f(r['mmd_learned'])} / "
            f"{f(r['mmd_training_free'])} / {f(r['mmd_random'])} | "
            f"{f(r.get('residual_learned', math.nan))} | {_count(r.get('sustained'), r['flows'])} |"
        )
    lines += [
        "",
        "Similarities: mean |cos| over pairs (Table 1 protocol) at N fixed points; "
        "truth: the system's right-hand side in standardised coordinates. Exponents: the "
        "learned flows' (recorded at the end of their fit, or re-measured); the true "
        "system's measured on its field in its own time unit (200 periods after 20), "
        "published where a source is in eqflow.data.dysts_systems.PUBLISHED_LYAPUNOV. "
        "MMD²: to the start set at the last step (mean over flows). Residual: median over "
        "the learned flows of rms(div v + v . s) / rms(v . s); sustained: exponents that "
        "hold over the long horizon (evaluate.py's chaos.long_horizon).",
    ]
    return "\n".join(lines) + "\n"
