"""Every upgrade eqflow applies to what older versions wrote or accepted, in one place: what it
upgrades, where it is applied, and until when it is kept. Each entry is removed on its date
(runs and caches older than that are re-made, or read with an older eqflow); nothing else in
the package knows about older layouts.

| upgrade | applied by | kept until |
|---|---|---|
| run configs naming classes by their earlier paths | runs.load_config | 2027-06-30 |
| protocols as entries of the ``callbacks`` group | runs.load_config | 2027-06-30 |
| ``callbacks.<protocol>...`` overrides on the command line | train.py, evaluate.py | 2027-06-30 |
| ensembles written before ``members.json`` existed | runs.run_dirs | 2027-06-30 |
| chaos rows recorded before the rest-speed floor existed | analysis.uniqueness | 2027-06-30 |
| score-cache entries from before the trainer was in the key | stages.score_cache | 2027-06-30 |
| Table 2 runs from before ``n_starts`` (one start, no sign) | analysis.patterns | 2027-06-30 |
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf, open_dict

# class paths that older run configs name, and where those classes live now (read-back only)
MOVED_TARGETS = {
    "eqflow.score.ScoreModule": "eqflow.models.ScoreModule",
    "eqflow.image_score.ImageScoreModule": "eqflow.models.ImageScoreModule",
    "eqflow.flow.EquilibriumFlowModule": "eqflow.models.EquilibriumFlowModule",
    "eqflow.flow.TrainingFreeFlow": "eqflow.models.TrainingFreeFlow",
    "eqflow.callbacks.MMDCallback": "eqflow.protocols.Preservation",
    "eqflow.callbacks.LyapunovCallback": "eqflow.protocols.Chaos",
    "eqflow.callbacks.FidelityCallback": "eqflow.protocols.Fidelity",
    "eqflow.callbacks.FigureCallback": "eqflow.protocols.Figures",
    "eqflow.callbacks.PatternFidelityCallback": "eqflow.protocols.Patterns",
    "eqflow.callbacks.CreatureCallback": "eqflow.protocols.Creatures",
    # the io/ and stages/ packages (2026-12-07)
    "eqflow.checkpointing.every_epoch_checkpoint": "eqflow.io.checkpoints.every_epoch_checkpoint",
}

# protocols that were entries of the ``callbacks`` group before it was split into ``measure``
MOVED_TO_MEASURE = ("mmd", "lyapunov", "residual", "fidelity", "figures", "creatures", "patterns")

# the trainer values every score model cached before the trainer was in the cache key was fitted
# with: a trainer left at them adds nothing to the key, so those entries stay valid
BASELINE_TRAINER = {"devices": (1, "1"), "precision": (32, "32", "32-true"), "strategy": ("auto",)}


def upgrade_config(cfg: DictConfig) -> DictConfig:
    """A run config from an older layout, with its classes' new names (protocols no longer take
    ``output_dir`` and ``seed``: the run's folder and seed are passed when they measure)."""
    for group in ("score.model", "flow.model"):
        node = OmegaConf.select(cfg, group)
        if node is not None and node.get("_target_") in MOVED_TARGETS:
            node._target_ = MOVED_TARGETS[node._target_]
    for node in (cfg.get("callbacks") or {}).values():
        target = node.get("_target_", "") if node else ""
        if target in MOVED_TARGETS:
            node._target_ = MOVED_TARGETS[target]
            if target.startswith("eqflow.callbacks."):  # a protocol: it no longer takes these
                for key in ("output_dir", "seed", "enabled"):
                    node.pop(key, None)
    with open_dict(cfg):  # protocols were once entries of the callbacks group
        old = cfg.get("callbacks") or {}
        moved = {
            k: v
            for k, v in old.items()
            if v and str(v.get("_target_", "")).startswith("eqflow.protocols.")
        }
        if moved and cfg.get("measure") is None:
            cfg.measure = moved
            cfg.callbacks = {k: v for k, v in old.items() if k not in moved}
    return cfg


def renamed_override_message(args: Sequence[str]) -> str | None:
    """A message naming the new key for a command-line override written for the old layout
    (``callbacks.mmd.steps=5`` is ``measure.mmd.steps=5``), else None."""
    for arg in args:
        body = arg.lstrip("+~")
        key, _, value = body.partition("=")
        head = key.split(".")
        if head[0] != "callbacks":
            continue
        if len(head) > 1 and head[1] in MOVED_TO_MEASURE:
            new = arg.replace("callbacks.", "measure.", 1)
        elif len(head) == 1 and value in ("creatures", "patterns", "default"):
            new = arg.replace("callbacks=", "measure=", 1)
        else:
            continue
        return (
            f"{arg}: the measurements moved from the callbacks group to the measure group "
            f"(callbacks now holds the Lightning callbacks only); write {new}"
        )
    return None


def is_unmarked_ensemble(cfg: DictConfig) -> bool:
    """An ensemble run written before ensembles left a members.json: known by its config."""
    members = OmegaConf.select(cfg, "flow.ensemble", default=1)
    return isinstance(members, int) and members > 1


def recorded_speed_normalised(metrics: dict, rest_speed: float) -> float:
    """``lyapunov/speed_normalised`` of a run's metrics; NaN for trajectories at rest, which
    runs measured before the rest-speed floor existed still normalised."""
    speed = float(metrics.get("lyapunov/mean_speed", math.nan))
    normalised = float(metrics.get("lyapunov/speed_normalised", math.nan))
    return math.nan if speed < rest_speed else normalised


def upgrade_table2_metrics(metrics: dict) -> dict:
    """A Table 2 run's metrics with ``table2/sign`` and ``table2/starts``: runs from before
    ``n_starts`` had one start and chose no sign (the better of the two is theirs)."""
    if "table2/sign" in metrics and "table2/starts" in metrics:
        return metrics
    out = dict(metrics)
    plus, minus = metrics["table2/training_free_plus"], metrics["table2/training_free_minus"]
    out.setdefault("table2/sign", "+" if plus >= minus else "-")
    if not out.get("table2/starts"):
        out["table2/starts"] = [
            {
                "plus": plus,
                "minus": minus,
                "random": metrics["table2/random_draws"],
                "reweight": metrics.get("table2/reweight_draws", []),
            }
        ]
    return out
