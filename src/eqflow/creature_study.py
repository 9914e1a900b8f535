"""Speed statistics across artificial-life runs (evaluate.py on an alife run or sweep).

Each run records ``creatures/*`` in metrics.json (:class:`eqflow.callbacks.CreatureCallback`).
Runs are grouped by icon; per icon: the mean tracked speed and polarisation, mean (std) over
runs (seeds), and the number of tracks.
"""
from __future__ import annotations

import logging
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
                                                     "runs": []})
        row["speed"].append(float(metrics["creatures/mean_speed"]))
        row["polarisation"].append(float(metrics["creatures/polarisation"]))
        row["tracks"].append(int(metrics["creatures/n_tracks"]))
        row["runs"].append(name)
    return icons, failed


def markdown(icons: dict[str, dict]) -> str:
    lines = ["| icon | runs | mean speed (px / unit time) | polarisation | tracks per run |",
             "|---|---|---|---|---|"]
    for icon, row in sorted(icons.items(), key=lambda kv: -mean_std(kv[1]["speed"])[0]):
        sm, ss = mean_std(row["speed"])
        pm, ps = mean_std(row["polarisation"])
        lines.append(f"| {icon} | {len(row['runs'])} | {sm:.3g} ± {ss:.2g} | {pm:.2f} ± {ps:.2f} | "
                     f"{sum(row['tracks']) / len(row['tracks']):.1f} |")
    return "\n".join(lines) + "\n"
