"""Speed statistics across artificial-life runs (evaluate.py on an alife run or sweep).

Each run records ``creatures/*`` in metrics.json (:class:`eqflow.callbacks.CreatureCallback`).
Runs are grouped by icon; per icon: the mean tracked speed and polarisation, mean (std) over
runs (seeds), and the number of tracks.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from eqflow.runs import runs_with_metrics

log = logging.getLogger(__name__)


def is_creature_run(cfg) -> bool:
    return bool((cfg.get("callbacks") or {}).get("creatures"))


def _mean_std(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if math.isfinite(x)]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0


def collect(run_dirs: list[Path], names: dict[Path, str]) -> tuple[dict[str, dict], dict[str, str]]:
    """Per icon: lists of the runs' mean speeds, polarisations, track counts and run names."""
    runs, failed = runs_with_metrics(run_dirs, names, "creatures/mean_speed",
                                     "the run did not finish its simulation")
    icons: dict[str, dict] = {}
    for name, cfg, metrics in runs:
        row = icons.setdefault(str(cfg.data.icon), {"speed": [], "polarisation": [], "tracks": [],
                                                     "runs": []})
        row["speed"].append(float(metrics["creatures/mean_speed"]))
        row["polarisation"].append(float(metrics["creatures/polarisation"]))
        row["tracks"].append(int(metrics["creatures/n_tracks"]))
        row["runs"].append(name)
    return icons, failed


def markdown(icons: dict[str, dict]) -> str:
    lines = ["| icon | runs | mean speed (px / unit time) | polarisation | tracks per run |",
             "|---|---|---|---|---|"]
    for icon, row in sorted(icons.items(), key=lambda kv: -_mean_std(kv[1]["speed"])[0]):
        sm, ss = _mean_std(row["speed"])
        pm, ps = _mean_std(row["polarisation"])
        lines.append(f"| {icon} | {len(row['runs'])} | {sm:.3g} ± {ss:.2g} | {pm:.2f} ± {ps:.2f} | "
                     f"{sum(row['tracks']) / len(row['tracks']):.1f} |")
    return "\n".join(lines) + "\n"
