"""The uniqueness study of a sweep (PAPER_NOTES 6): the flows of the sweep beside baseline
groups (training-free flows, untrained flow networks, the ground truth, the score), compared by
their representations (Table 1), their chaos, their distribution preservation and a UMAP.

Everything here works on plain objects (a :class:`~eqflow.sweeps.Sweep`); evaluate.py only
adds Hydra, output files and logging.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from eqflow.callbacks import flow_lyapunov
from eqflow.data.base import random_subset
from eqflow.dynamics import integrate_ode
from eqflow.flow import EquilibriumFlowModule, TrainingFreeFlow
from eqflow.metrics import mmd_over_time, representation, similarity_table
from eqflow.metrics.lyapunov import REST_SPEED
from eqflow.sweeps import Sweep

log = logging.getLogger(__name__)

Field = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Groups:
    """Named groups of fields; ``members[group]`` lists (member name, field)."""

    members: dict[str, list[tuple[str, Field]]] = field(default_factory=dict)

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
    score, dim = first.flow.score_model, first.datamodule.x.shape[1]
    n = len(sweep.runs) if n_baselines is None else int(n_baselines)
    groups = Groups()
    own = sweep_group_name(sweep)
    for run, name in zip(sweep.runs, sweep.names):
        groups.add(own, name, run.flow.velocity)
    base = 10_000 * (seed + 1)  # baseline seeds: far from the sweep's own seeds
    if own != "training-free":
        for i in range(n):
            groups.add("training-free", f"training-free {i}",
                       TrainingFreeFlow(score, dim, seed=base + i).eval().velocity)
    flow_kw = {}
    if isinstance(first.flow, EquilibriumFlowModule):
        flow_kw = {k: first.flow.hparams[k] for k in ("hidden", "activation", "n_freqs")}
    x0 = first.datamodule.x
    for i in range(n):
        torch.manual_seed(base + n + i)
        random_flow = EquilibriumFlowModule(score, dim, **flow_kw)
        random_flow.calibrate(x0)  # outputs normalised like a trained flow's
        groups.add("random", f"random {i}", random_flow.eval().velocity)
    truth = first.datamodule.true_field()
    if truth is not None:
        groups.add("ground truth", "ground truth", truth)
    groups.add("score", "score", first.flow.score)
    return groups


def fixed_points(sweep: Sweep, n_points: int, seed: int) -> torch.Tensor:
    """N data points scaled by sqrt(alpha) (the noised data's scale), drawn from ``seed``."""
    first = sweep.runs[0]
    g = torch.Generator().manual_seed(seed)
    return random_subset(first.datamodule.x, n_points, g) * torch.sqrt(first.flow.alpha)


@torch.no_grad()
def representations(groups: Groups, points: torch.Tensor) -> dict[str, torch.Tensor]:
    return {g: torch.stack([representation(f, points) for _, f in members])
            for g, members in groups.members.items()}


def reference_of(reps: dict[str, torch.Tensor]) -> torch.Tensor:
    """Signs are aligned to the ground truth, or to the first flow where there is none."""
    return reps["ground truth"][0] if "ground truth" in reps else next(iter(reps.values()))[0]


def table1(reps: dict[str, torch.Tensor]) -> dict[tuple[str, str], tuple[float, float]]:
    return similarity_table(reps, reference_of(reps))


@torch.no_grad()
def mmd_curves(groups: Groups, start: torch.Tensor, dt: float, steps: int, bandwidth: float,
               skip: tuple[str, ...] = ("ground truth",)) -> dict[str, torch.Tensor]:
    """MMD^2 to the start set over time for every member: {group: (members, steps + 1)}.

    The ground truth lives on the clean data's scale, not on the noised density the flows
    preserve, so it is left out by default.
    """
    out = {}
    for g, members in groups.members.items():
        if g in skip:
            continue
        curves = [mmd_over_time(integrate_ode(f, start, dt, steps), bandwidth) for _, f in members]
        out[g] = torch.stack(curves).double()
    return out


# A positive exponent over a finite horizon T is also what linear separation gives (a shear, a
# torus): log(c T) / T, which shrinks to a third or less over 4 T. An exponent that keeps at least
# half its value over the longer horizon is counted as sustained (exponential separation keeps all).
SUSTAINED_RATIO = 0.5


def chaos(sweep: Sweep, recompute: bool = False, settings: dict | None = None,
          seed: int = 0, long_horizon: int = 0) -> list[dict]:
    """The largest Lyapunov exponent of every flow of the sweep (raw and speed-normalised):
    the value its run recorded (NaN included: no trajectory stayed in the box), or re-measured
    (float64) when the run recorded none or ``recompute`` asks for it.

    ``long_horizon`` = k > 0: every flow is also followed for k times the horizon, from starts
    drawn with ``seed``; ``lyapunov_long`` is the exponent over that horizon,
    ``lyapunov_long_first`` the same trajectories' exponent over the first horizon (the row's
    ``lyapunov`` may come from other starts: the run's own), and ``sustained`` says whether the
    long one is positive and at least SUSTAINED_RATIO of the first (chaos keeps its exponent;
    linear separation loses most of it)."""
    settings = {"n_trajectories": 8, "dt": 0.1, "steps": 5000, "burn_in": 500, "bound": 4.0,
                **(settings or {})}
    rows = _recorded_or_measured_chaos(sweep, recompute, settings, seed)
    if long_horizon > 0:
        long = {**settings, "steps": settings["steps"] * long_horizon}
        for row, run in zip(rows, sweep.runs):
            res = flow_lyapunov(run.flow, run.datamodule.x,
                                generator=torch.Generator().manual_seed(seed),
                                record_at=settings["steps"], **long)
            lam, first = res["lyapunov"], res["lyapunov_at_record"]
            row["lyapunov_long"], row["lyapunov_long_first"] = lam, first
            row["sustained"] = bool(_finite(lam) and lam > 0 and lam >= SUSTAINED_RATIO * first)
    return rows


def _recorded_or_measured_chaos(sweep: Sweep, recompute: bool, settings: dict,
                                seed: int) -> list[dict]:
    rows = []
    for run, name in zip(sweep.runs, sweep.names):
        m = run.metrics
        if not recompute and "lyapunov/max" in m:
            speed = float(m.get("lyapunov/mean_speed", math.nan))
            normalised = float(m.get("lyapunov/speed_normalised", math.nan))
            if speed < REST_SPEED:  # recorded before the rest floor existed
                normalised = math.nan
            rows.append({"run": name, "lyapunov": float(m["lyapunov/max"]),
                         "speed_normalised": normalised, "mean_speed": speed, "source": "run"})
            continue
        g = torch.Generator().manual_seed(seed)
        res = flow_lyapunov(run.flow, run.datamodule.x, generator=g, **settings)
        rows.append({"run": name, "lyapunov": res["lyapunov"],
                     "speed_normalised": res["lyapunov_speed_normalised"],
                     "mean_speed": res["mean_speed"], "source": "evaluate"})
    return rows


def chaos_summary(rows: list[dict]) -> dict:
    vals = torch.tensor([r["lyapunov"] for r in rows if _finite(r["lyapunov"])], dtype=torch.float64)
    norm = torch.tensor([r["speed_normalised"] for r in rows if _finite(r["speed_normalised"])],
                        dtype=torch.float64)
    if not len(vals):
        return {"n": 0}
    at_rest = sum(1 for r in rows if _finite(r.get("mean_speed")) and r["mean_speed"] < REST_SPEED)
    return {"n": len(rows), "n_finite": len(vals), "share_positive": float((vals > 0).double().mean()),
            "n_positive": int((vals > 0).sum()), "n_at_rest": at_rest,
            "median": float(vals.median()), "min": float(vals.min()), "max": float(vals.max()),
            "speed_normalised_median": float(norm.median()) if len(norm) else math.nan,
            "speed_normalised_min": float(norm.min()) if len(norm) else math.nan,
            "speed_normalised_max": float(norm.max()) if len(norm) else math.nan,
            **({"n_sustained": sum(r["sustained"] for r in rows)} if rows and "sustained" in rows[0]
               else {})}


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# ---- tables as text -------------------------------------------------------------------------

def table1_markdown(table: dict[tuple[str, str], tuple[float, float]], names: list[str],
                    sizes: dict[str, int]) -> str:
    head = "| | " + " | ".join(f"{n} (n={sizes[n]})" for n in names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    for i, a in enumerate(names):
        cells = []
        for j, b in enumerate(names):
            mean, std = table[(a, b)]
            cells.append("" if j < i else (f"{mean:.4f}" if sizes[a] == sizes[b] == 1 and a == b
                                           else f"{mean:.4f} ± {std:.4f}"))
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def table1_csv(table: dict[tuple[str, str], tuple[float, float]], names: list[str]) -> str:
    rows = ["group_a,group_b,mean_abs_cos,std_abs_cos"]
    for i, a in enumerate(names):
        for b in names[i:]:
            mean, std = table[(a, b)]
            rows.append(f"{a},{b},{mean:.6f},{std:.6f}")
    return "\n".join(rows) + "\n"


def mmd_final_markdown(curves: dict[str, torch.Tensor], times: list[float]) -> str:
    lines = [f"| group | n | MMD² at t = {times[-1]:g} (mean ± std) |", "|---|---|---|"]
    for g, c in curves.items():
        last = c[:, -1]
        std = float(last.std()) if len(last) > 1 else 0.0
        lines.append(f"| {g} | {len(c)} | {float(last.mean()):.5f} ± {std:.5f} |")
    return "\n".join(lines) + "\n"
