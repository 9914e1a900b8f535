"""Analyses of a sweep: ``analyse(root, cfg, out) -> Report``, one per kind of study.

- ``uniqueness``: Table 1, chaos, MMD over time and UMAP of the flows of one score model;
- ``patterns``: Table 2 over Gray-Scott runs;
- ``creatures``: speed and polarisation per icon over artificial-life runs;
- ``systems``: one table across dynamical systems (a multirun over ``data.system``).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from eqflow.analysis import creatures, patterns, systems, uniqueness
from eqflow.analysis.report import Report
from eqflow.runs import RunLoadError, load_config, run_dirs

ANALYSES = {
    "uniqueness": uniqueness.analyse,
    "patterns": patterns.analyse,
    "creatures": creatures.analyse,
    "systems": systems.analyse,
}


def infer_analysis(root: str | Path) -> str:
    """The analysis a sweep's runs call for, from the readable run configs: ``patterns`` for
    runs that measured Table 2, ``creatures`` for artificial-life runs, ``systems`` for runs of
    more than one dynamical system, else ``uniqueness``."""
    configs = []
    for run_dir in run_dirs(root):
        try:
            configs.append(load_config(run_dir))
        except (RunLoadError, OSError, ValueError):
            continue
    if not configs:
        return "uniqueness"
    measured = configs[0].get("measure") or {}
    if measured.get("patterns"):
        return "patterns"
    if measured.get("creatures"):
        return "creatures"
    found = {systems.system_name(cfg) for cfg in configs}
    return "systems" if len(found - {None}) > 1 else "uniqueness"


def analyse(root: str | Path, cfg: DictConfig, out: Path) -> Report:
    """Run the analysis ``cfg.analysis`` names (``auto``: :func:`infer_analysis`)."""
    name = str(cfg.get("analysis", "auto"))
    if name == "auto":
        name = infer_analysis(root)
    if name not in ANALYSES:
        raise ValueError(f"analysis={name!r}: choose one of auto, {', '.join(ANALYSES)}")
    return ANALYSES[name](Path(root), cfg, out)


__all__ = ["ANALYSES", "analyse", "infer_analysis"]
