"""The uniqueness study of a sweep, put together: :func:`analyse` measures it
(:mod:`eqflow.analysis.study`), writes its tables (:mod:`eqflow.analysis.study_tables`) and
verdicts, and returns the :class:`~eqflow.analysis.report.Report`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from eqflow.analysis.report import Report, csv_text, report_group
from eqflow.analysis.study import StudyMeasurements, chaos_summary, measure_study, sweep_group_name
from eqflow.analysis.study_tables import (
    _median,
    chaos_columns,
    chaos_markdown,
    mmd_final_markdown,
    residual_markdown,
    table1_csv,
    table1_markdown,
)
from eqflow.analysis.verdicts import study_verdicts, verdicts_markdown


def analyse(root: Path, cfg: DictConfig, out: Path) -> Report:
    """Table 1, chaos, MMD over time and UMAP for the sweep at ``root``; figures into ``out``."""
    m = measure_study(root, cfg, out)
    sweep, table, rows, curves = m.sweep, m.table, m.chaos_rows, m.curves
    names, sizes = list(m.reps), m.groups.sizes()
    columns = chaos_columns(rows)
    chaos_csv = csv_text(columns, rows)
    residual_median = {
        g: _median([v["relative"] for v in rows_]) for g, rows_ in m.residual_rows.items()
    }
    ch = chaos_summary(rows)
    own = sweep_group_name(sweep)
    verdicts = study_verdicts(table, ch, curves, own) if own == "learned" else []
    mmd_final = {
        k: {"mean": float(c[:, -1].mean()), "std": float(c[:, -1].std()) if len(c) > 1 else 0.0}
        for k, c in curves.items()
    }
    run_cfg = sweep.runs[0].cfg
    report = Report(
        root=sweep.root,
        group=report_group(run_cfg),
        headline="table1.md",
        failed=sweep.failed,
        run_config=run_cfg,
        summary={
            "kind": "uniqueness",
            "runs": sweep.names,
            "group_sizes": sizes,
            "table1": {f"{a} | {b}": {"mean": v, "std": s} for (a, b), (v, s) in table.items()},
            "chaos": ch,
            "chaos_rows": rows,
            "mmd_final": mmd_final,
            "residual": m.residual_rows,
            "residual_median": residual_median,
            "verdicts": verdicts,
            "mmd_curves_mean": {k: c.mean(0).tolist() for k, c in curves.items()},
            "timings": m.timings,
        },
        files={
            "table1.md": table1_markdown(table, names, sizes),
            "table1.csv": table1_csv(table, names),
            "chaos.csv": chaos_csv,
            "mmd_final.md": mmd_final_markdown(curves, m.times),
        },
        tables={
            "table1": (
                ["group_a", "group_b", "mean_abs_cos", "std_abs_cos"],
                [[a, b, *table[(a, b)]] for i, a in enumerate(names) for b in names[i:]],
            ),
            "chaos": (columns, [[r[c] for c in columns] for r in rows]),
        },
        scalars=study_scalars(ch, mmd_final, residual_median, table),
    )
    report.sections = study_sections(m, cfg, ch, verdicts, names, sizes)
    return report


def study_scalars(ch: dict, mmd_final: dict, residual_median: dict, table: dict) -> dict:
    """The numbers the evaluation's W&B run logs."""
    return {
        **{f"chaos/{k}": v for k, v in ch.items()},
        **{f"mmd_final/{k}": v["mean"] for k, v in mmd_final.items()},
        **{f"residual/{k}": v for k, v in residual_median.items()},
        **{f"table1/{a} | {b}": v for (a, b), (v, _) in table.items()},
    }


def study_sections(
    m: StudyMeasurements,
    cfg: DictConfig,
    ch: dict,
    verdicts: list[dict],
    names: list[str],
    sizes: dict,
) -> list[tuple[str, str]]:
    """The report's sections, verdicts first."""
    run_cfg = m.sweep.runs[0].cfg
    sections = [
        *([("Verdicts: the study's claims", verdicts_markdown(verdicts))] if verdicts else []),
        (
            "Runs",
            f"- runs evaluated: {len(m.sweep.runs)}\n"
            f"- data: `{run_cfg.data._target_}`, score: `{run_cfg.score.model._target_}` "
            f"(t = {run_cfg.score.model.get('t')}), flow: `{run_cfg.flow.model._target_}`\n"
            f"- N = {cfg.n_points} fixed points, baseline draws per group: "
            f"{len(m.sweep.runs) if cfg.n_baselines is None else cfg.n_baselines}, "
            f"seed {cfg.seed}",
        ),
        (
            "Table 1: |cos| between groups (mean ± std over pairs, sign-aligned)",
            table1_markdown(m.table, names, sizes) + "[CSV](table1.csv)",
        ),
        ("Chaos: largest Lyapunov exponent of each flow", chaos_markdown(ch, cfg)),
        (
            "Distribution preservation: MMD² to the start set (each flow from its own draw)",
            mmd_final_markdown(m.curves, m.times) + "![MMD over time](mmd.png)",
        ),
        (
            "Equilibrium residual: rms(div v + v . s) / rms(v . s) on the MMD start set",
            residual_markdown(m.residual_rows) + "\n0 for a flow that preserves the score model's "
            "density. An exact flow (flow=exact) and a training-free flow keep only the score "
            "model's non-conservative part (0 with score=energy, up to rounding); a field "
            "unrelated to the density is of order 1. For a training-free flow v . s is "
            "identically 0 (s . D s with a skew D), so only the second column applies to it.",
        ),
    ]
    if m.has_umap:
        sections.append(("UMAP of all representations", "![UMAP](umap.png)"))
    return sections
