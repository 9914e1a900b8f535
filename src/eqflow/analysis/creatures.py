"""Speed statistics across artificial-life runs (evaluate.py on an alife run or sweep).

Each run records ``creatures/*`` in metrics.json (:class:`eqflow.protocols.Creatures`).
Runs are grouped by icon; per icon: the mean tracked speed and polarisation, mean (std) over
runs (seeds), the number of tracks, and the creatures found per frame against the number the
training density predicts.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from eqflow.report import Report, mean_std
from eqflow.runs import load_config, named_run_dirs, runs_with_metrics

log = logging.getLogger(__name__)


def is_creature_run(cfg) -> bool:
    return bool((cfg.get("callbacks") or {}).get("creatures"))


def collect(run_dirs: list[Path], names: dict[Path, str]) -> tuple[dict[str, dict], dict[str, str]]:
    """Per icon: lists of the runs' mean speeds, polarisations, track counts and run names."""
    runs, failed = runs_with_metrics(run_dirs, names, "creatures/mean_speed",
                                     "the run did not finish its simulation")
    icons: dict[str, dict] = {}
    for name, cfg, metrics in runs:
        icon = cfg.data.get("icon") or Path(str(cfg.data.get("path", "images"))).stem  # files
        row = icons.setdefault(str(icon), {"speed": [], "polarisation": [], "tracks": [],
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


def analyse(root: Path, cfg: DictConfig, out: Path) -> Report:
    """Speed and polarisation per icon over the artificial-life runs under ``root``."""
    names = named_run_dirs(root)
    dirs = list(names)
    icons, failed = collect(dirs, names)
    if not icons:
        raise RuntimeError(f"none of the {len(dirs)} runs under {root} has creature statistics: "
                           + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    md = markdown(icons)
    run_cfg = load_config(next(d for d in dirs if names[d] not in failed))
    return Report(
        root=Path(root), group=str(run_cfg.get("name", "eqflow")), headline="creatures.md",
        failed=failed, run_config=run_cfg, summary={"kind": "creatures", "icons": icons},
        files={"creatures.md": md},
        sections=[("Creature motion per icon (mean ± std over runs)", md),
                  ("Per run", runs_markdown(icons) + "\nEach run's animation and Figure 5 panels "
                   "are in its own `figures/` folder.")],
        tables={"creatures": (["icon", "run", "seed", "mean_speed", "polarisation", "tracks",
                               "count_ratio"],
                              [[icon, r, row["seeds"][i], row["speed"][i], row["polarisation"][i],
                                row["tracks"][i], row["count_ratio"][i]]
                               for icon, row in icons.items() for i, r in enumerate(row["runs"])])},
        scalars={f"creatures/{icon}/mean_speed": mean_std(row["speed"])[0]
                 for icon, row in icons.items()})
