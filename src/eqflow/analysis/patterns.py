"""Table 2 across Gray-Scott runs (evaluate.py on a pattern run or sweep, docs/method.md §6).

Each run records its column (``table2/*`` in metrics.json, written by
:class:`eqflow.protocols.Patterns`); runs without it, or every run with
``patterns.recompute=true`` or ``patterns.n_starts=S``, are re-measured from their saved flow.
The starts of all runs of one pattern (a run's S start patterns; a seed sweep's runs) are
pooled: the training-free value is the mean (std) over starts, a baseline's the mean (std) over
all (start, draw) pairs, and the paired comparison (:mod:`eqflow.metrics.paired`) gives the
share of pairs the training-free flow wins and a bootstrap interval of the mean difference.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from eqflow.analysis.report import Report, csv_text, mean_std, report_group
from eqflow.compat import upgrade_table2_metrics
from eqflow.metrics.paired import VERDICT_RULE, paired_comparison
from eqflow.runs import load_config, measure_run, named_run_dirs, runs_with_metrics

log = logging.getLogger(__name__)

PUBLISHED = {  # docs/method.md §6, Table 2: value or (mean, std) over 10 draws
    "life": {"training-free": 0.271, "random": (0.021, 0.022), "random re-weight": (0.052, 0.032)},
    "waves": {"training-free": 0.589, "random": (0.182, 0.221), "random re-weight": (0.105, 0.044)},
    "spirals": {
        "training-free": 0.250,
        "random": (0.083, 0.090),
        "random re-weight": (0.180, 0.106),
    },
    "maze": {"training-free": 0.270, "random": (0.072, 0.104), "random re-weight": (0.031, 0.022)},
}
ROWS = ("training-free", "random", "random re-weight")
DRAW_KEYS = {"random": "random", "random re-weight": "reweight"}


def chosen_sign(metrics: dict) -> str:
    """The sign of D a run chose."""
    return upgrade_table2_metrics(metrics)["table2/sign"]


def starts_of_run(metrics: dict) -> list[dict]:
    """A run's starts: ``{"training-free", "random", "random re-weight"}`` per start, the
    training-free value with the run's chosen sign."""
    metrics = upgrade_table2_metrics(metrics)
    sign = metrics["table2/sign"]
    return [
        {
            "training-free": float(st["plus"] if sign == "+" else st["minus"]),
            **{row: [float(v) for v in st[key]] for row, key in DRAW_KEYS.items()},
        }
        for st in metrics["table2/starts"]
    ]


def pattern_name(cfg: DictConfig) -> str:
    data = cfg.data
    if data.get("feed") is not None:
        return f"F={data.feed},k={data.kill}"
    return str(data.get("preset"))


def collect(
    run_dirs: list[Path],
    names: dict[Path, str],
    recompute: bool,
    scratch: Path,
    cache_dir: str | None = None,
    n_starts: int | None = None,
) -> tuple[dict[str, dict], dict[str, str]]:
    """Per pattern: {"starts": [...] (see :func:`starts_of_run`), "runs": [...], "sign": [...]};
    plus the runs left out, with the reason. ``n_starts`` re-measures every run from that many
    start patterns."""
    settings = {"measure.patterns.n_starts": int(n_starts)} if n_starts else None

    def measure(run_dir: Path, name: str) -> dict:
        log.info("Measuring Table 2 for %s", name)
        return measure_run(run_dir, scratch / name.replace("/", "_"), cache_dir, settings=settings)

    runs, failed = runs_with_metrics(
        run_dirs,
        names,
        "table2/training_free",
        "its data has no simulator",
        measure,
        remeasure=recompute or bool(n_starts),
    )
    columns: dict[str, dict] = {}
    for name, cfg, metrics in runs:
        key = pattern_name(cfg)
        kind = flow_kind(cfg)
        if kind != "training-free":
            key = f"{key} [{kind}]"
        col = columns.setdefault(
            key, {"starts": [], "runs": [], "sign": [], "pattern": pattern_name(cfg), "flow": kind}
        )
        col["starts"] += [
            {**st, "unit": start_unit(cfg, i)} for i, st in enumerate(starts_of_run(metrics))
        ]
        col["runs"].append(name)
        col["sign"].append(chosen_sign(metrics))
    return columns, failed


def flow_kind(cfg: DictConfig) -> str:
    """``training-free`` for the training-free flow, else the flow's class name."""
    target = str(cfg.flow.model._target_)
    return "training-free" if target.endswith("TrainingFreeFlow") else target.rsplit(".", 1)[-1]


def start_unit(cfg: DictConfig, index: int) -> str:
    """The identity of a run's ``index``-th start: runs of one pattern with the same data seed,
    seed and baseline draws meet the same start patterns in the same order (the protocol's
    random stream does not depend on the flow), so their values on it pair."""
    draws = OmegaConf.select(cfg, "measure.patterns.n_draws", default=None)
    return f"data_seed={cfg.data_seed},seed={cfg.seed},n_draws={draws},start={index}"


def learned_against_training_free(columns: dict[str, dict]) -> dict[str, dict]:
    """Per learned flow's column: the paired comparison of its value (its chosen sign) with the
    training-free flow's on the starts both met (matched by :func:`start_unit`)."""
    out: dict[str, dict] = {}
    for key, col in columns.items():
        reference = columns.get(col["pattern"])
        if col["flow"] == "training-free" or reference is None:
            continue
        tf = {st["unit"]: st["training-free"] for st in reference["starts"]}
        shared = [st for st in col["starts"] if st["unit"] in tf]
        if not shared:
            continue
        learned = [st["training-free"] for st in shared]
        stats = paired_comparison(learned, [[tf[st["unit"]]] for st in shared]).as_dict()
        out[key] = {
            **stats,
            "learned_mean": sum(learned) / len(learned),
            "training_free_mean": sum(tf[st["unit"]] for st in shared) / len(shared),
        }
    return out


def learned_markdown(stats: dict[str, dict]) -> str:
    lines = [
        "| pattern [learned flow] | starts | learned | training-free | starts won by learned "
        "| mean difference [95 % bootstrap interval] | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, c in stats.items():
        lines.append(
            f"| {key} | {c['n_units']} | {c['learned_mean']:.3f} | {c['training_free_mean']:.3f} "
            f"| {c['share_beaten']:.0%} | {c['mean_difference']:+.3f} [{c['ci_low']:+.3f}, "
            f"{c['ci_high']:+.3f}] | {c['verdict']} |"
        )
    return (
        "\n".join(lines) + "\n\nVerdict rule (learned minus training-free): " + VERDICT_RULE + "\n"
    )


def summarise(columns: dict[str, dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    """Per pattern and row: (mean, std, n) over starts (training-free) or (start, draw) pairs."""
    out = {}
    for p, col in columns.items():
        values = {"training-free": [st["training-free"] for st in col["starts"]]}
        values |= {row: [v for st in col["starts"] for v in st[row]] for row in DRAW_KEYS}
        out[p] = {r: (*mean_std(values[r]), len(values[r])) for r in ROWS}
    return out


def paired(columns: dict[str, dict]) -> dict[str, dict[str, dict]]:
    """Per pattern and baseline with draws: the paired comparison over the pattern's starts."""
    out: dict[str, dict[str, dict]] = {}
    for p, col in columns.items():
        tf = [st["training-free"] for st in col["starts"]]
        for row in DRAW_KEYS:
            draws = [st[row] for st in col["starts"]]
            if all(draws):
                out.setdefault(p, {})[row] = paired_comparison(tf, draws).as_dict()
    return out


def paired_markdown(stats: dict[str, dict[str, dict]]) -> str:
    lines = [
        "| pattern | baseline | starts | pairs won by training-free | mean difference "
        "[95 % bootstrap interval] | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for p, rows in stats.items():
        for row, c in rows.items():
            lines.append(
                f"| {p} | {row} | {c['n_units']} | {c['share_beaten']:.0%} of "
                f"{c['n_pairs']} | {c['mean_difference']:+.3f} [{c['ci_low']:+.3f}, "
                f"{c['ci_high']:+.3f}] | {c['verdict']} |"
            )
    return "\n".join(lines) + "\n\nVerdict rule: " + VERDICT_RULE + "\n"


def _cell(mean: float, std: float, n: int) -> str:
    if not n:
        return "—"
    return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ({std:.3f})"


def _published(pattern: str, row: str) -> str:
    value = PUBLISHED.get(pattern, {}).get(row)
    if value is None:
        return "—"
    return f"{value:.3f}" if isinstance(value, float) else f"{value[0]:.3f} ({value[1]:.3f})"


def markdown(table: dict, columns: dict) -> str:
    patterns = list(table)
    head = "| | " + " | ".join(f"{p} (ours)" + " | " + f"{p} (published)" for p in patterns) + " |"
    lines = [head, "|---|" + "---|---|" * len(patterns)]
    learned = any(columns[p]["flow"] != "training-free" for p in patterns)
    for row in ROWS:
        cells = [f"{_cell(*table[p][row])} | {_published(p, row)}" for p in patterns]
        # a learned flow's column holds its own value in the flow's row
        label = "the column's flow" if learned and row == ROWS[0] else row
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "|cos| between the change under the flow (EMA of the SDE trajectory at step 200, "
        "minus the start) and under the simulator (20 steps, minus the start); the sign of "
        "the skew kernel with the higher mean over a run's starts (one start: the better "
        "of the two, as published). Training-free: mean (std) over starts (of all runs of "
        "the pattern); baselines: mean (std) over all (start, draw) pairs. Published: one "
        "start.",
        "",
        "Runs: "
        + "; ".join(
            f"{p}: {', '.join(columns[p]['runs'])} (sign {', '.join(columns[p]['sign'])})"
            for p in patterns
        ),
    ]
    return "\n".join(lines) + "\n"


TABLE2_CSV_COLUMNS = ["pattern", "row", "mean", "std", "n", "published_mean", "published_std"]


def table2_csv(table: dict) -> str:
    rows = []
    for p, by_row in table.items():
        for row in ROWS:
            pub = PUBLISHED.get(p, {}).get(row)
            pm, ps = (pub, "") if isinstance(pub, float) else (pub or ("", ""))
            mean, std, n = by_row[row]
            rows.append(dict(zip(TABLE2_CSV_COLUMNS, [p, row, mean, std, n, pm, ps])))
    return csv_text(TABLE2_CSV_COLUMNS, rows)


def beats_baselines(table: dict) -> dict[str, dict[str, bool]]:
    """Per pattern and baseline with draws: is the training-free value above that baseline's
    mean + 1 std? The criterion is asked of both baselines (random kernel, random re-weight):
    a flow can pass one and not the other (benchmarks/BENCHMARKS.md, the maze)."""
    out: dict[str, dict[str, bool]] = {}
    for p, rows in table.items():
        tf = rows["training-free"][0]
        out[p] = {row: bool(tf > rows[row][0] + rows[row][1]) for row in ROWS[1:] if rows[row][2]}
    return out


def verdict_text(verdicts: dict[str, dict[str, bool]]) -> str:
    return "Training-free above each baseline's mean + 1 std: " + "; ".join(
        f"{p}: " + ", ".join(f"{row} {'yes' if ok else 'no'}" for row, ok in rows.items())
        for p, rows in verdicts.items()
    )


def analyse(root: Path, cfg: DictConfig, out: Path) -> Report:
    """Table 2 over the Gray-Scott runs under ``root`` (each run's recorded column, or
    re-measured with ``patterns.recompute=true`` or from ``patterns.n_starts`` starts)."""
    names = named_run_dirs(root)
    dirs = list(names)
    start = time.perf_counter()
    columns, failed = collect(
        dirs,
        names,
        bool(cfg.patterns.recompute),
        out / "runs",
        cfg.paths.get("cache_dir"),
        cfg.patterns.get("n_starts"),
    )
    if not columns:
        raise RuntimeError(
            f"none of the {len(dirs)} runs under {root} has a Table 2 value: "
            + "; ".join(f"{k}: {v}" for k, v in failed.items())
        )
    run_cfg = load_config(next(d for d in dirs if names[d] not in failed))
    return _table2_report(Path(root), columns, run_cfg, failed, time.perf_counter() - start)


PAIRED_COLUMNS = (
    "pattern",
    "baseline",
    "starts",
    "share_beaten",
    "mean_difference",
    "ci_low",
    "ci_high",
    "verdict",
)
PAIRED_KEYS = ("n_units", "share_beaten", "mean_difference", "ci_low", "ci_high", "verdict")


def _table2_report(
    root: Path, columns: dict, run_cfg: DictConfig, failed: dict, seconds: float
) -> Report:
    """The report of Table 2 from the runs' ``columns``: the table, the paired comparisons with
    their verdicts, the CSV and the scalars for the loggers."""
    table = summarise(columns)
    stats = paired(columns)
    learned = learned_against_training_free(columns)
    md = markdown(table, columns) + "\n" + paired_markdown(stats)
    if learned:
        md += "\nLearned flows against the training-free flow, start by start:\n\n"
        md += learned_markdown(learned)
    verdicts = beats_baselines(table)
    n_runs = sum(len(c["runs"]) for c in columns.values())
    return Report(
        root=root,
        group=report_group(run_cfg),
        headline="table2.md",
        failed=failed,
        run_config=run_cfg,
        summary={
            "kind": "patterns",
            "table2": {
                p: {r: {"mean": m, "std": sd, "n": n} for r, (m, sd, n) in rows.items()}
                for p, rows in table.items()
            },
            "above_baseline_mean_plus_std": verdicts,
            "paired": stats,
            "learned_against_training_free": learned,
            "verdict_rule": VERDICT_RULE,
            "timings": {"table2_s": seconds},
        },
        files={"table2.md": md, "table2.csv": table2_csv(table)},
        sections=[
            (
                "Table 2: fidelity to the Gray-Scott dynamics",
                f"- runs evaluated: {n_runs}\n\n{md}[CSV](table2.csv)\n\n"
                f"{verdict_text(verdicts)}\n\n"
                "Each run's Figure 3 panels and SDE animation are in its own `figures/` folder.",
            )
        ],
        tables={
            "table2": (
                ["pattern", "row", "mean", "std", "n"],
                [[p, r, m, sd, n] for p, rr in table.items() for r, (m, sd, n) in rr.items()],
            ),
            "table2_paired": (
                list(PAIRED_COLUMNS),
                [
                    [p, r, *(c[k] for k in PAIRED_KEYS)]
                    for p, rr in stats.items()
                    for r, c in rr.items()
                ],
            ),
        },
        scalars={f"table2/{p}/{r}": m for p, rr in table.items() for r, (m, _, _) in rr.items()},
    )
