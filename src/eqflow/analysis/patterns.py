"""Table 2 across Gray-Scott runs (evaluate.py on a pattern run or sweep, PAPER_NOTES 6).

Each run records its column (``table2/*`` in metrics.json, written by
:class:`eqflow.protocols.Patterns`); runs without it, or every run with
``patterns.recompute=true``, are re-measured from their saved flow. Runs of the same pattern
(e.g. a seed sweep) are pooled: the training-free value is their mean (std), a baseline's is
the mean (std) over all its draws.
"""
from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path

from omegaconf import DictConfig

from eqflow.report import Report, mean_std
from eqflow.runs import load_config, measure_run, named_run_dirs, runs_with_metrics

log = logging.getLogger(__name__)

PUBLISHED = {  # PAPER_NOTES 6, Table 2: value or (mean, std) over 10 draws
    "life": {"training-free": 0.271, "random": (0.021, 0.022), "random re-weight": (0.052, 0.032)},
    "waves": {"training-free": 0.589, "random": (0.182, 0.221), "random re-weight": (0.105, 0.044)},
    "spirals": {"training-free": 0.250, "random": (0.083, 0.090),
                "random re-weight": (0.180, 0.106)},
    "maze": {"training-free": 0.270, "random": (0.072, 0.104), "random re-weight": (0.031, 0.022)},
}
ROWS = ("training-free", "random", "random re-weight")


def is_pattern_run(cfg: DictConfig) -> bool:
    return bool((cfg.get("callbacks") or {}).get("patterns"))


def pattern_name(cfg: DictConfig) -> str:
    data = cfg.data
    if data.get("feed") is not None:
        return f"F={data.feed},k={data.kill}"
    return str(data.get("preset"))


def collect(run_dirs: list[Path], names: dict[Path, str], recompute: bool,
            scratch: Path, cache_dir: str | None = None) -> tuple[dict[str, dict], dict[str, str]]:
    """Per pattern: {"training-free": [...], "random": [...], "random re-weight": [...],
    "runs": [...], "sign": [...]}; plus the runs left out, with the reason."""
    def measure(run_dir: Path, name: str) -> dict:
        log.info("Measuring Table 2 for %s", name)
        return measure_run(run_dir, scratch / name.replace("/", "_"), cache_dir)

    runs, failed = runs_with_metrics(run_dirs, names, "table2/training_free",
                                     "its data has no simulator", measure, remeasure=recompute)
    columns: dict[str, dict] = {}
    for name, cfg, metrics in runs:
        col = columns.setdefault(pattern_name(cfg), {r: [] for r in ROWS} | {"runs": [], "sign": []})
        col["training-free"].append(float(metrics["table2/training_free"]))
        col["random"].extend(float(v) for v in metrics["table2/random_draws"])
        col["random re-weight"].extend(float(v) for v in metrics.get("table2/reweight_draws", []))
        col["runs"].append(name)
        col["sign"].append("+" if metrics["table2/training_free_plus"]
                           >= metrics["table2/training_free_minus"] else "-")
    return columns, failed


def summarise(columns: dict[str, dict]) -> dict[str, dict[str, tuple[float, float, int]]]:
    return {p: {r: (*mean_std(col[r]), len(col[r])) for r in ROWS} for p, col in columns.items()}


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
    for row in ROWS:
        cells = [f"{_cell(*table[p][row])} | {_published(p, row)}" for p in patterns]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "|cos| between the change under the flow (EMA of the SDE trajectory at step 200, "
              "minus the start) and under the simulator (20 steps, minus the start); best of the "
              "two signs of the skew kernel. Baselines: mean (std) over their draws; several runs "
              "of one pattern: mean (std) over runs.",
              "", "Runs: " + "; ".join(f"{p}: {', '.join(columns[p]['runs'])} "
                                        f"(sign {', '.join(columns[p]['sign'])})" for p in patterns)]
    return "\n".join(lines) + "\n"


def csv_text(table: dict) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["pattern", "row", "mean", "std", "n", "published_mean", "published_std"])
    for p, rows in table.items():
        for row in ROWS:
            pub = PUBLISHED.get(p, {}).get(row)
            pm, ps = (pub, "") if isinstance(pub, float) else (pub or ("", ""))
            writer.writerow([p, row, *rows[row], pm, ps])
    return buf.getvalue()


def beats_baselines(table: dict) -> dict[str, dict[str, bool]]:
    """Per pattern and baseline with draws: is the training-free value above that baseline's
    mean + 1 std? The criterion is asked of both baselines (random kernel, random re-weight):
    a flow can pass one and not the other (benchmarks/BENCHMARKS.md, the maze)."""
    out: dict[str, dict[str, bool]] = {}
    for p, rows in table.items():
        tf = rows["training-free"][0]
        out[p] = {row: bool(tf > rows[row][0] + rows[row][1])
                  for row in ROWS[1:] if rows[row][2]}
    return out


def verdict_text(verdicts: dict[str, dict[str, bool]]) -> str:
    return "Training-free above each baseline's mean + 1 std: " + "; ".join(
        f"{p}: " + ", ".join(f"{row} {'yes' if ok else 'no'}" for row, ok in rows.items())
        for p, rows in verdicts.items())


def analyse(root: Path, cfg: DictConfig, out: Path) -> Report:
    """Table 2 over the Gray-Scott runs under ``root`` (each run's recorded column, or
    re-measured with ``patterns.recompute=true``)."""
    names = named_run_dirs(root)
    dirs = list(names)
    start = time.perf_counter()
    columns, failed = collect(dirs, names, bool(cfg.patterns.recompute), out / "runs",
                              cfg.paths.get("cache_dir"))
    if not columns:
        raise RuntimeError(f"none of the {len(dirs)} runs under {root} has a Table 2 value: "
                           + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    table = summarise(columns)
    md = markdown(table, columns)
    verdicts = beats_baselines(table)
    run_cfg = load_config(next(d for d in dirs if names[d] not in failed))
    return Report(
        root=Path(root), group=str(run_cfg.get("name", "eqflow")), headline="table2.md",
        failed=failed, run_config=run_cfg,
        summary={"kind": "patterns",
                 "table2": {p: {r: {"mean": m, "std": sd, "n": n} for r, (m, sd, n) in rows.items()}
                            for p, rows in table.items()},
                 "above_baseline_mean_plus_std": verdicts,
                 "timings": {"table2_s": time.perf_counter() - start}},
        files={"table2.md": md, "table2.csv": csv_text(table)},
        sections=[("Table 2: fidelity to the Gray-Scott dynamics",
                   f"- runs evaluated: {sum(len(c['runs']) for c in columns.values())}\n\n"
                   + md + "[CSV](table2.csv)\n\n" + verdict_text(verdicts) + "\n\n"
                   "Each run's Figure 3 panels and SDE animation are in its own `figures/` folder.")],
        tables={"table2": (["pattern", "row", "mean", "std", "n"],
                           [[p, r, m, sd, n] for p, rr in table.items()
                            for r, (m, sd, n) in rr.items()])},
        scalars={f"table2/{p}/{r}": m for p, rr in table.items() for r, (m, _, _) in rr.items()})
