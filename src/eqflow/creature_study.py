"""Speed statistics across artificial-life runs (evaluate.py on an alife run or sweep).

Each run records ``creatures/*`` in metrics.json (:class:`eqflow.callbacks.CreatureCallback`).
Runs are grouped by icon; per icon: the mean tracked speed and polarisation, mean (std) over
runs (seeds), the number of tracks, and the creatures found per frame against the number the
training density predicts.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from eqflow.results import mean_std
from eqflow.runs import runs_with_metrics

log = logging.getLogger(__name__)


def is_creature_run(cfg) -> bool:
    return bool((cfg.get("callbacks") or {}).get("creatures"))


def collect(run_dirs: list[Path], names: dict[Path, str]) -> tuple[dict[str, dict], dict[str, str]]:
    """Per icon: lists of the runs' mean speeds, polarisations, track counts and run names."""
    runs, failed = runs_with_metrics(run_dirs, names, "creatures/mean_speed",
                                     "the run did not finish its simulation")
    icons: dict[str, dict] = {}
    for name, cfg, metrics in runs:
        row = icons.setdefault(str(cfg.data.icon), {"speed": [], "polarisation": [], "tracks": [],
                                                     "count_ratio": [], "runs": [], "seeds": []})
        row["speed"].append(float(metrics["creatures/mean_speed"]))
        # runs from before creature-sized detection have no count ratio
        row["count_ratio"].append(float(metrics.get("creatures/count_ratio", float("nan"))))
        row["polarisation"].append(float(metrics["creatures/polarisation"]))
        row["tracks"].append(int(metrics["creatures/n_tracks"]))
        row["runs"].append(name)
        row["seeds"].append(int(cfg.seed))
    return icons, failed


def markdown(icons: dict[str, dict]) -> str:
    lines = ["| icon | runs | mean speed (px / unit time) | polarisation | tracks per run | "
             "creatures found / expected |",
             "|---|---|---|---|---|---|"]
    for icon, row in sorted(icons.items(), key=lambda kv: -mean_std(kv[1]["speed"])[0]):
        sm, ss = mean_std(row["speed"])
        pm, ps = mean_std(row["polarisation"])
        cm, cs = mean_std(row["count_ratio"])
        tracked = sum(math.isfinite(v) for v in row["speed"])
        runs = str(len(row["runs"])) + (f" ({tracked} with tracks)" if tracked < len(row["runs"]) else "")
        lines.append(f"| {icon} | {runs} | {sm:.3g} ± {ss:.2g} | {pm:.2f} ± {ps:.2f} | "
                     f"{sum(row['tracks']) / len(row['tracks']):.1f} | {cm:.2f} ± {cs:.2f} |")
    return "\n".join(lines) + "\n"


def runs_markdown(icons: dict[str, dict]) -> str:
    """One row per run: the numbers the per-icon table averages."""
    lines = ["| icon | run | seed | mean speed | polarisation | tracks | creatures found / expected |",
             "|---|---|---|---|---|---|---|"]
    for icon, row in sorted(icons.items()):
        for i, run in enumerate(row["runs"]):
            lines.append(f"| {icon} | {run} | {row['seeds'][i]} | {row['speed'][i]:.3g} | {row['polarisation'][i]:.2f} | "
                         f"{row['tracks'][i]} | {row['count_ratio'][i]:.2f} |")
    return "\n".join(lines) + "\n"
