"""Speed, shape and collective statistics across artificial-life runs (evaluate.py on an alife
run or an icon x seed sweep).

Each run records ``creatures/*`` in metrics.json (:class:`eqflow.protocols.Creatures`).
Runs are grouped by icon (by icon and flow where the runs hold several flows); per group: the
mean tracked speed and polarisation, mean (std) over runs (seeds), the number of tracks, the
creatures found per frame against the number the training density predicts, and for whole
creatures (integrity above the calibrated threshold): their share in the last quarter of the
frames, their speed, travel, polarisation and milling against the shuffled-heading null, and
g(r) at contact range against the training scatters'. Speeds, whole shares and travel are
compared between groups seed by seed (a seed draws the flow's D and the SDE's noise: paired).
"""

from __future__ import annotations

import itertools
import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from eqflow.analysis.report import Report, mean_std, report_group
from eqflow.metrics.paired import paired_comparison
from eqflow.runs import load_config, named_run_dirs, runs_with_metrics

log = logging.getLogger(__name__)


def collect(run_dirs: list[Path], names: dict[Path, str]) -> tuple[dict[str, dict], dict[str, str]]:
    """Per icon: lists of the runs' mean speeds, polarisations, track counts and run names."""
    runs, failed = runs_with_metrics(
        run_dirs, names, "creatures/mean_speed", "the run did not finish its simulation"
    )
    icons: dict[str, dict] = {}
    several_flows = len({flow_name(cfg) for _, cfg, _ in runs}) > 1
    for name, cfg, metrics in runs:
        icon = cfg.data.get("icon") or Path(str(cfg.data.get("path", "images"))).stem  # files
        group = f"{icon} ({flow_name(cfg)})" if several_flows else str(icon)
        row = icons.setdefault(
            group,
            {
                "speed": [],
                "polarisation": [],
                "tracks": [],
                "count_ratio": [],
                "runs": [],
                "seeds": [],
            },
        )
        row["speed"].append(float(metrics["creatures/mean_speed"]))
        # runs from before creature-sized detection have no count ratio
        row["count_ratio"].append(float(metrics.get("creatures/count_ratio", float("nan"))))
        row["polarisation"].append(float(metrics["creatures/polarisation"]))
        row["tracks"].append(int(metrics["creatures/n_tracks"]))
        row["runs"].append(name)
        row["seeds"].append(int(cfg.seed))
        for key in WHOLE:
            row.setdefault(key, []).append(float(metrics.get(f"creatures/{key}", float("nan"))))
    return icons, failed


def flow_name(cfg: DictConfig) -> str:
    """The flow's class (``TrainingFreeFlow``, ``LocalExactFlow``, ...): runs of one icon under
    several flows are grouped by icon and flow."""
    target = str(cfg.get("flow", {}).get("model", {}).get("_target_", "flow"))
    return target.rsplit(".", 1)[-1]


# the whole-creature numbers of each run (runs from before shape integrity have NaN)
WHOLE = (
    "whole_share_late",
    "whole_mean_speed",
    "whole_travel_bodies",
    "whole_travel_bodies_relative",
    "whole_polarisation",
    "whole_polarisation_null_q95",
    "whole_milling",
    "whole_milling_null_q95",
    "whole_g_short",
    "whole_g_short_training",
)


def _ms(values) -> str:
    m, sd = mean_std([v for v in values if math.isfinite(v)] or [float("nan")])
    return f"{m:.3g} ± {sd:.2g}"


def _beyond_null(values, nulls) -> str:
    pairs = [(v, q) for v, q in zip(values, nulls) if math.isfinite(v) and math.isfinite(q)]
    return f"{sum(v > q for v, q in pairs)} of {len(pairs)}"


def whole_markdown(icons: dict[str, dict]) -> str:
    lines = [
        "| icon | whole creatures / expected, last quarter | speed of whole creatures | "
        "travel of whole creatures (body lengths): net / less the common drift | "
        "polarisation (runs above null q95) | "
        "milling (runs above null q95) | "
        "g(r) at contact: runs / training |",
        "|---|---|---|---|---|---|---|",
    ]
    for icon, row in sorted(icons.items()):
        polar = _beyond_null(row["whole_polarisation"], row["whole_polarisation_null_q95"])
        milling = _beyond_null(row["whole_milling"], row["whole_milling_null_q95"])
        lines.append(
            f"| {icon} | {_ms(row['whole_share_late'])} | {_ms(row['whole_mean_speed'])} | "
            f"{_ms(row['whole_travel_bodies'])} / {_ms(row['whole_travel_bodies_relative'])} | "
            f"{_ms(row['whole_polarisation'])} ({polar}) | "
            f"{_ms(row['whole_milling'])} ({milling}) | "
            f"{_ms(row['whole_g_short'])} / {_ms(row['whole_g_short_training'])} |"
        )
    return "\n".join(lines) + "\n"


# a bootstrap over fewer paired seeds has too few distinct resamples for a 95 % interval
# (2 seeds: 3 distinct means); the difference is still reported
MIN_VERDICT_SEEDS = 4


def paired_verdicts(icons: dict[str, dict], key: str = "speed", more: str = "faster") -> list[dict]:
    """Every pair of icons (or icon-and-flow groups) on the seeds both have: A's ``key`` (a
    speed by default; any per-seed statistic: whole share, travel) minus B's, seed by seed; the
    verdict says which is ``more`` (higher); none on fewer than ``MIN_VERDICT_SEEDS`` shared
    seeds."""
    out = []
    for a, b in itertools.permutations(sorted(icons), 2):
        sa = dict(zip(icons[a]["seeds"], icons[a][key]))
        sb = dict(zip(icons[b]["seeds"], icons[b][key]))
        seeds = [s for s in sa if s in sb and math.isfinite(sa[s]) and math.isfinite(sb[s])]
        if len(seeds) < 2 or a > b:  # one row per unordered pair, A before B by name
            continue
        c = paired_comparison([sa[s] for s in seeds], [[sb[s]] for s in seeds])
        labels = {"above": f"{a} {more}", "below": f"{b} {more}", "undecided": "undecided"}
        verdict = labels[c.verdict]
        if len(seeds) < MIN_VERDICT_SEEDS:
            verdict = f"too few seeds (< {MIN_VERDICT_SEEDS})"
        out.append({"a": a, "b": b, **c.as_dict(), "verdict": verdict})
    return out


def verdicts_markdown(rows: list[dict], what: str = "speed", more: str = "faster") -> str:
    """The verdict table; ``what`` names the number compared (tracked blobs' speed, whole
    creatures' speed, share or travel), ``more`` what a higher one is called."""
    if not rows:
        return f"No pair of icons shares two or more seeds with a {what}: no comparison.\n"
    lines = [
        f"| icons | seeds | mean {what} difference (A - B) [95 % interval] | A {more} in "
        "| verdict |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['a']} - {r['b']} | {r['n_units']} | {r['mean_difference']:+.3g} "
            f"[{r['ci_low']:+.3g}, {r['ci_high']:+.3g}] | {r['share_beaten']:.0%} | "
            f"{r['verdict']} |"
        )
    return "\n".join(lines) + (
        "\n\nRule: a bootstrap 95 % interval of the mean paired difference "
        f"(seeds resampled) above 0 means A is {more}; below 0, B; else "
        f"undecided; no verdict on fewer than {MIN_VERDICT_SEEDS} paired seeds.\n"
    )


def markdown(icons: dict[str, dict]) -> str:
    lines = [
        "| icon | runs | mean speed (px / unit time) | polarisation | tracks per run | "
        "creatures found / expected |",
        "|---|---|---|---|---|---|",
    ]
    for icon, row in sorted(icons.items(), key=lambda kv: -mean_std(kv[1]["speed"])[0]):
        sm, ss = mean_std(row["speed"])
        pm, ps = mean_std(row["polarisation"])
        cm, cs = mean_std(row["count_ratio"])
        tracked = sum(math.isfinite(v) for v in row["speed"])
        runs = str(len(row["runs"])) + (
            f" ({tracked} with tracks)" if tracked < len(row["runs"]) else ""
        )
        lines.append(
            f"| {icon} | {runs} | {sm:.3g} ± {ss:.2g} | {pm:.2f} ± {ps:.2f} | "
            f"{sum(row['tracks']) / len(row['tracks']):.1f} | {cm:.2f} ± {cs:.2f} |"
        )
    return "\n".join(lines) + "\n"


def runs_markdown(icons: dict[str, dict]) -> str:
    """One row per run: the numbers the per-icon table averages."""
    lines = [
        "| icon | run | seed | mean speed | polarisation | tracks | creatures found / expected | "
        "whole / expected, last quarter | speed of whole creatures |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for icon, row in sorted(icons.items()):
        for i, run in enumerate(row["runs"]):
            lines.append(
                f"| {icon} | {run} | {row['seeds'][i]} | {row['speed'][i]:.3g} | "
                f"{row['polarisation'][i]:.2f} | "
                f"{row['tracks'][i]} | {row['count_ratio'][i]:.2f} | "
                f"{row['whole_share_late'][i]:.2f} | {row['whole_mean_speed'][i]:.3g} |"
            )
    return "\n".join(lines) + "\n"


def analyse(root: Path, cfg: DictConfig, out: Path) -> Report:
    """Speed and polarisation per icon over the artificial-life runs under ``root``."""
    names = named_run_dirs(root)
    dirs = list(names)
    icons, failed = collect(dirs, names)
    if not icons:
        raise RuntimeError(
            f"none of the {len(dirs)} runs under {root} has creature statistics: "
            + "; ".join(f"{k}: {v}" for k, v in failed.items())
        )
    run_cfg = load_config(next(d for d in dirs if names[d] not in failed))
    return _creatures_report(Path(root), icons, run_cfg, failed)


WHOLE_LEGEND = (
    "\nWhole: a blob whose best IoU with the turned icon reaches what 95 % of "
    "creatures placed whole in training scatters reach. Polarisation: |mean unit "
    "heading| per frame (1: all move one way); milling: |mean r x u| about the "
    "group's centre (1: all circle it one way); each against its null from "
    "headings shuffled across creatures and frames. g(r) at contact (r < 1.5 "
    "icon widths): above the training scatters' means the creatures attract, "
    "below that they repel.\n"
)
# the per-run table's columns after icon and run, and the key of each in an icon's statistics
RUN_COLUMNS = {
    "seed": "seeds",
    "mean_speed": "speed",
    "polarisation": "polarisation",
    "tracks": "tracks",
    "count_ratio": "count_ratio",
    "whole_share_late": "whole_share_late",
    "whole_mean_speed": "whole_mean_speed",
}


# the paired comparisons of the report: (summary key, file, section title, statistic, what
# it is called in the table, what a higher one is called)
VERDICTS = (
    (
        "speed_verdicts",
        "speed_verdicts.md",
        "Speed by icon, seed by seed (tracked blobs)",
        "speed",
        "speed",
        "faster",
    ),
    # on whole creatures only: what the paper's claim is about (tracked blobs include parts of
    # creatures that fell apart)
    (
        "whole_speed_verdicts",
        "whole_speed_verdicts.md",
        "Speed of whole creatures by icon, seed by seed",
        "whole_mean_speed",
        "whole creatures' speed",
        "faster",
    ),
    (
        "whole_share_verdicts",
        "whole_share_verdicts.md",
        "Whole share (last quarter), seed by seed",
        "whole_share_late",
        "whole share (last quarter)",
        "higher",
    ),
    (
        "whole_travel_verdicts",
        "whole_travel_verdicts.md",
        "Travel of whole creatures (body lengths), seed by seed",
        "whole_travel_bodies",
        "travel of whole creatures",
        "farther",
    ),
)


def _creatures_report(root: Path, icons: dict, run_cfg: DictConfig, failed: dict) -> Report:
    """The report of the icons' statistics: motion, whole creatures, the paired verdicts
    (:data:`VERDICTS`) and one row per run."""
    md = markdown(icons)
    whole = whole_markdown(icons)
    verdicts = {}
    for name, file, title, key, what, more in VERDICTS:
        rows = paired_verdicts(icons, key=key, more=more)
        verdicts[name] = (file, title, rows, verdicts_markdown(rows, what, more))
    return Report(
        root=root,
        group=report_group(run_cfg),
        headline="creatures.md",
        failed=failed,
        run_config=run_cfg,
        summary={
            "kind": "creatures",
            "icons": icons,
            **{name: rows for name, (_, _, rows, _) in verdicts.items()},
        },
        files={
            "creatures.md": md,
            "whole_creatures.md": whole,
            **{file: table for file, _, _, table in verdicts.values()},
        },
        sections=[
            ("Creature motion per icon (mean ± std over runs)", md),
            (
                "Whole creatures and collective behaviour (mean ± std over runs)",
                whole + WHOLE_LEGEND,
            ),
            *((title, table) for _, title, _, table in verdicts.values()),
            (
                "Per run",
                runs_markdown(icons) + "\nEach run's animation and Figure 5 panels "
                "are in its own `figures/` folder.",
            ),
        ],
        tables={
            "creatures": (
                ["icon", "run", *RUN_COLUMNS],
                [
                    [icon, r, *(row[k][i] for k in RUN_COLUMNS.values())]
                    for icon, row in icons.items()
                    for i, r in enumerate(row["runs"])
                ],
            )
        },
        scalars={
            f"creatures/{icon}/mean_speed": mean_std(row["speed"])[0] for icon, row in icons.items()
        },
    )
