"""The uniqueness study's measurements of a sweep (docs/method.md §6): the flows of the sweep
beside baseline groups (training-free flows, untrained flow networks, the ground truth, the
score), their representations (Table 1), chaos, distribution preservation, residuals and UMAP.
They work on plain objects (a :class:`~eqflow.runs.Sweep`); the tables are written by
:mod:`eqflow.analysis.study_tables` and put together by :mod:`eqflow.analysis.uniqueness`."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from eqflow import plots
from eqflow.compat import recorded_speed_normalised
from eqflow.data.base import random_subset
from eqflow.dynamics import integrate_ode
from eqflow.metrics import mmd_over_time, representation, similarity_table
from eqflow.metrics.embedding import umap_embedding
from eqflow.metrics.fidelity import align_signs
from eqflow.metrics.lyapunov import REST_SPEED
from eqflow.metrics.mmd import resolve_bandwidth
from eqflow.metrics.residual import continuity_residual
from eqflow.models.baselines import random_flow, training_free_flow
from eqflow.models.flow import EquilibriumFlowModule
from eqflow.progress import announced
from eqflow.protocols.chaos import (
    Chaos,
    flow_lyapunov_many,
    stacked_field,
    sustained_chaos_many,
)
from eqflow.protocols.preservation import mmd_curve
from eqflow.runs import Sweep, load_sweep

log = logging.getLogger(__name__)

Field = Callable[[torch.Tensor], torch.Tensor]


@dataclass
@dataclass
class Groups:
    """Named groups of fields; ``members[group]`` lists (member name, field); ``stacked[group]``
    (where the group's flows stack) is one float64 field (K, N, d) -> (K, N, d) moving row k by
    member k, for integrating the whole group at once."""

    members: dict[str, list[tuple[str, Field]]] = field(default_factory=dict)
    stacked: dict[str, Field] = field(default_factory=dict)

    def add(self, group: str, name: str, f: Field) -> None:
        self.members.setdefault(group, []).append((name, f))

    def sizes(self) -> dict[str, int]:
        return {g: len(m) for g, m in self.members.items()}


def sweep_group_name(sweep: Sweep) -> str:
    kinds = {type(r.flow).__name__ for r in sweep.runs}
    return "training-free" if kinds == {"TrainingFreeFlow"} else "learned"


def build_groups(sweep: Sweep, n_baselines: int | None = None, seed: int = 0) -> Groups:
    """The sweep's flows, ``n_baselines`` training-free and random flows (default: as many as
    the sweep has flows), the ground-truth field where the data has one, and the score."""
    first = sweep.runs[0]
    score, dim = first.flow.score_model, first.data.dim
    n = len(sweep.runs) if n_baselines is None else int(n_baselines)
    groups = Groups()
    own = sweep_group_name(sweep)
    for run, name in zip(sweep.runs, sweep.names):
        groups.add(own, name, run.flow.velocity)
    stacked = stacked_field([run.flow for run in sweep.runs])
    if stacked is not None:
        groups.stacked[own] = stacked
    base = 10_000 * (seed + 1)  # baseline seeds: far from the sweep's own seeds
    if own != "training-free":
        for i in range(n):
            groups.add(
                "training-free",
                f"training-free {i}",
                training_free_flow(score, dim, base + i).velocity,
            )
    flow_kw = {}
    if isinstance(first.flow, EquilibriumFlowModule):
        flow_kw = {k: first.flow.hparams[k] for k in ("hidden", "activation", "n_freqs")}
    for i in range(n):
        groups.add(
            "random",
            f"random {i}",
            random_flow(score, dim, base + n + i, first.data.x, **flow_kw).velocity,
        )
    truth = first.data.true_field()
    if truth is not None:
        groups.add("ground truth", "ground truth", truth)
    groups.add("score", "score", first.flow.score)
    return groups


def fixed_points(sweep: Sweep, n_points: int, seed: int) -> torch.Tensor:
    """N data points scaled by sqrt(alpha) (the noised data's scale), drawn from ``seed``."""
    first = sweep.runs[0]
    g = torch.Generator().manual_seed(seed)
    return random_subset(first.data.x, n_points, g) * torch.sqrt(first.flow.alpha)


@torch.no_grad()
def representations(groups: Groups, points: torch.Tensor) -> dict[str, torch.Tensor]:
    return {
        g: torch.stack([representation(f, points) for _, f in members])
        for g, members in groups.members.items()
    }


def reference_of(reps: dict[str, torch.Tensor]) -> torch.Tensor:
    """Signs are aligned to the ground truth, or to the first flow where there is none."""
    return reps["ground truth"][0] if "ground truth" in reps else next(iter(reps.values()))[0]


def table1(reps: dict[str, torch.Tensor]) -> dict[tuple[str, str], tuple[float, float]]:
    return similarity_table(reps, reference_of(reps))


@torch.no_grad()
def mmd_curves(
    groups: Groups,
    starts: torch.Tensor,
    dt: float,
    steps: int,
    bandwidth: float,
    skip: tuple[str, ...] = ("ground truth",),
) -> dict[str, torch.Tensor]:
    """MMD^2 to its start set over time for every member: {group: (members, steps + 1)}.

    ``starts`` is (sets, n, d): member k of every group starts from set k (modulo the number of
    sets), so with one set per member the members' spread includes the start set's sampling
    noise, and a comparison of two groups does not rest on one draw of the data. A (n, d)
    tensor is one set shared by all. The ground truth lives on the clean data's scale, not on
    the noised density the flows preserve, so it is left out by default.
    """
    if starts.ndim == 2:
        starts = starts[None]
    out = {}
    for g, members in groups.members.items():
        if g in skip:
            continue
        own = starts[torch.arange(len(members)) % len(starts)]
        if g in groups.stacked:  # the whole group in one integration
            path = integrate_ode(groups.stacked[g], own.double(), dt, steps)
            curves = [
                mmd_over_time(path[:, k].to(starts.dtype), bandwidth) for k in range(len(members))
            ]
        else:
            curves = [
                mmd_curve(f, own[k], dt, steps, bandwidth) for k, (_, f) in enumerate(members)
            ]
        out[g] = torch.stack(curves).double()
    return out


def start_sets(sweep: Sweep, groups: Groups, n_points: int, seed: int) -> torch.Tensor:
    """One start set a member (as many as the largest group has members): each an independent
    draw of ``n_points`` data points, noised to the level the flows preserve."""
    first = sweep.runs[0]
    g = torch.Generator().manual_seed(seed)
    n_sets = max(len(m) for m in groups.members.values())
    return torch.stack(
        [
            first.flow.score_model.noise(random_subset(first.data.x, n_points, g), g)
            for _ in range(n_sets)
        ]
    )


def residuals(
    groups: Groups,
    score: Field,
    points: torch.Tensor,
    skip: tuple[str, ...] = ("ground truth", "score"),
) -> dict[str, list[dict]]:
    """:func:`continuity_residual` of every member at ``points`` (noised data): zero for an
    equilibrium flow of the score's density, up to the score model's non-conservative part."""
    return {
        g: [continuity_residual(f, score, points) for _, f in members]
        for g, members in groups.members.items()
        if g not in skip
    }


def chaos(
    sweep: Sweep,
    recompute: bool = False,
    settings: dict | None = None,
    seed: int = 0,
    long_horizon: int = 0,
) -> list[dict]:
    """The largest Lyapunov exponent of every flow of the sweep (raw and speed-normalised):
    the value its run recorded (NaN included: no trajectory stayed in the box), or re-measured
    (float64) when the run recorded none or ``recompute`` asks for it.

    ``long_horizon`` = k > 0: every flow is also followed for k times the horizon, from starts
    drawn with ``seed``; ``lyapunov_long`` is the exponent over that horizon,
    ``lyapunov_long_first`` the same trajectories' exponent over the first horizon (the row's
    ``lyapunov`` may come from other starts: the run's own), and ``sustained`` says whether the
    long one is positive and at least SUSTAINED_RATIO of the first (chaos keeps its exponent;
    linear separation loses most of it)."""
    settings = {**Chaos().settings, **(settings or {})}  # the protocol's defaults, overridden
    rows = _recorded_or_measured_chaos(sweep, recompute, settings, seed)
    if long_horizon > 0:  # every flow from the same starts, all in one batched integration
        flows = [run.flow for run in sweep.runs]
        generators = [torch.Generator().manual_seed(seed) for _ in flows]
        for row, extra in zip(
            rows,
            sustained_chaos_many(flows, sweep.runs[0].data.x, settings, long_horizon, generators),
        ):
            row.update(extra)
    return rows


def _recorded_or_measured_chaos(
    sweep: Sweep, recompute: bool, settings: dict, seed: int
) -> list[dict]:
    rows: list[dict | None] = []
    todo = []
    for i, (run, name) in enumerate(zip(sweep.runs, sweep.names)):
        m = run.metrics
        if not recompute and "lyapunov/max" in m:
            speed = float(m.get("lyapunov/mean_speed", math.nan))
            normalised = recorded_speed_normalised(m, REST_SPEED)
            rows.append(
                {
                    "run": name,
                    "lyapunov": float(m["lyapunov/max"]),
                    "speed_normalised": normalised,
                    "mean_speed": speed,
                    "source": "run",
                }
            )
            continue
        rows.append(None)
        todo.append(i)
    if todo:  # re-measured together: one batched integration where the flows stack
        flows = [sweep.runs[i].flow for i in todo]
        results = flow_lyapunov_many(
            flows,
            sweep.runs[todo[0]].data.x,
            [torch.Generator().manual_seed(seed) for _ in todo],
            **settings,
        )
        for i, res in zip(todo, results):
            rows[i] = {
                "run": sweep.names[i],
                "lyapunov": res["lyapunov"],
                "speed_normalised": res["lyapunov_speed_normalised"],
                "mean_speed": res["mean_speed"],
                "source": "evaluate",
            }
    return rows


def chaos_summary(rows: list[dict]) -> dict:
    vals = torch.tensor(
        [r["lyapunov"] for r in rows if _finite(r["lyapunov"])], dtype=torch.float64
    )
    norm = torch.tensor(
        [r["speed_normalised"] for r in rows if _finite(r["speed_normalised"])], dtype=torch.float64
    )
    if not len(vals):
        return {"n": 0}
    at_rest = sum(1 for r in rows if _finite(r.get("mean_speed")) and r["mean_speed"] < REST_SPEED)
    return {
        "n": len(rows),
        "n_finite": len(vals),
        "share_positive": float((vals > 0).double().mean()),
        "n_positive": int((vals > 0).sum()),
        "n_at_rest": at_rest,
        "median": float(vals.median()),
        "min": float(vals.min()),
        "max": float(vals.max()),
        "speed_normalised_median": float(norm.median()) if len(norm) else math.nan,
        "speed_normalised_min": float(norm.min()) if len(norm) else math.nan,
        "speed_normalised_max": float(norm.max()) if len(norm) else math.nan,
        **(
            {"n_sustained": sum(r["sustained"] for r in rows)}
            if rows and "sustained" in rows[0]
            else {}
        ),
    }


def study_umap(reps: dict[str, torch.Tensor], n_neighbors: int, seed: int) -> np.ndarray:
    ref = reference_of(reps)
    allreps = torch.cat([align_signs(r.double(), ref.double()) for r in reps.values()])
    return umap_embedding(allreps, n_neighbors, "cosine", seed)


@dataclass
class StudyMeasurements:
    """What :func:`analyse` measures on a sweep, before it is written up."""

    sweep: Sweep
    groups: Groups
    reps: dict[str, torch.Tensor]
    table: dict
    chaos_rows: list[dict]
    curves: dict[str, torch.Tensor]
    times: list[float]
    residual_rows: dict[str, list[dict]]
    has_umap: bool
    timings: dict = field(default_factory=dict)


def _timed(timings: dict, name: str):
    """Logs the stage when it starts and ends; its seconds go to ``timings["<name>_s"]``."""
    return announced(f"Study: {name}", timings, f"{name}_s")


def measure_study(root: Path, cfg: DictConfig, out: Path) -> StudyMeasurements:
    """Table 1, chaos, MMD over time (figure), residuals and UMAP (figure) for the sweep."""
    timings: dict = {}
    with _timed(timings, "load"):
        sweep = load_sweep(root, cfg.paths.get("cache_dir"))
    log.info(
        "Evaluating %d runs of %s (%d left out)", len(sweep.runs), sweep.root, len(sweep.failed)
    )
    seed = int(cfg.seed)
    with _timed(timings, "table1"):
        groups = build_groups(sweep, cfg.n_baselines, seed)
        reps = representations(groups, fixed_points(sweep, int(cfg.n_points), seed))
        table = table1(reps)
    with _timed(timings, "chaos"):
        rows = chaos(
            sweep,
            bool(cfg.chaos.recompute),
            OmegaConf.to_container(cfg.chaos.settings),
            seed,
            int(cfg.chaos.get("long_horizon", 0)),
        )
        plots.histogram(
            {
                "raw": [r["lyapunov"] for r in rows],
                "speed-normalised": [r["speed_normalised"] for r in rows],
            },
            out / "lyapunov_hist.png",
            "largest Lyapunov exponent",
        )
    with _timed(timings, "mmd"):
        starts = start_sets(sweep, groups, int(cfg.mmd.n_points), seed)
        curves = mmd_curves(
            groups,
            starts,
            float(cfg.mmd.dt),
            int(cfg.mmd.steps),
            resolve_bandwidth(cfg.mmd.bandwidth, starts[0]),
        )
        times = [float(cfg.mmd.dt) * k for k in range(int(cfg.mmd.steps) + 1)]
        plots.curves(
            {k: c.mean(0) for k, c in curves.items()},
            out / "mmd.png",
            "time",
            "MMD² to start",
            "Distribution preservation (mean ± std)",
            x={k: times for k in curves},
            bands={
                k: c.std(0) if len(c) > 1 else torch.zeros_like(c[0]) for k, c in curves.items()
            },
        )
    with _timed(timings, "residual"):
        residual_rows = residuals(groups, sweep.runs[0].flow.score, starts[0])
    with _timed(timings, "umap"):
        has_umap = umap_figure(groups, reps, cfg, out / "umap.png")
    return StudyMeasurements(
        sweep, groups, reps, table, rows, curves, times, residual_rows, has_umap, timings
    )


def umap_figure(groups: Groups, reps: dict[str, torch.Tensor], cfg: DictConfig, path: Path) -> bool:
    """The UMAP of every representation; False when ``umap.enabled`` is off, and (with a
    warning) when there are too few."""
    if not cfg.umap.get("enabled", True):
        log.info("No UMAP: umap.enabled=false")
        return False
    try:
        labels = [grp for grp, m in groups.members.items() for _ in m]
        plots.embedding(
            study_umap(reps, int(cfg.umap.n_neighbors), int(cfg.seed)),
            labels,
            path,
            "UMAP of flow representations (cosine)",
            marked=("ground truth", "score"),
        )
        return True
    except ValueError as exc:
        log.warning("No UMAP: %s", exc)
        return False


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
