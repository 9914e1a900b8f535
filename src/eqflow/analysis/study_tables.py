"""The uniqueness study's tables as Markdown and CSV text (measured by
:mod:`eqflow.analysis.study`)."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig

from eqflow.metrics.lyapunov import REST_SPEED
from eqflow.protocols.chaos import SUSTAINED_RATIO


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(torch.tensor(finite, dtype=torch.float64).median()) if finite else math.nan


def residual_markdown(rows: dict[str, list[dict]]) -> str:
    lines = [
        "| group | n | residual / rms(v . s), median | residual / rms(\\|v\\| \\|s\\|), "
        "median (max) |",
        "|---|---|---|---|",
    ]
    for g, values in rows.items():
        along = _median([v["relative"] for v in values])
        size = [v["relative_to_speed_score"] for v in values]
        lines.append(
            f"| {g} | {len(values)} | "
            f"{'v . s = 0' if math.isnan(along) else f'{along:.4f}'} | "
            f"{_median(size):.2e} ({max(size):.2e}) |"
        )
    return "\n".join(lines) + "\n"


def table1_markdown(
    table: dict[tuple[str, str], tuple[float, float]], names: list[str], sizes: dict[str, int]
) -> str:
    head = "| | " + " | ".join(f"{n} (n={sizes[n]})" for n in names) + " |"
    lines = [head, "|---" * (len(names) + 1) + "|"]
    for i, a in enumerate(names):
        cells = []
        for j, b in enumerate(names):
            mean, std = table[(a, b)]
            cells.append(
                ""
                if j < i
                else (
                    f"{mean:.4f}"
                    if sizes[a] == sizes[b] == 1 and a == b
                    else f"{mean:.4f} ± {std:.4f}"
                )
            )
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


CHAOS_COLUMNS = ["run", "lyapunov", "speed_normalised", "mean_speed", "source"]


LONG_HORIZON_COLUMNS = ["lyapunov_long_first", "lyapunov_long", "sustained"]


def chaos_columns(rows: list[dict]) -> list[str]:
    """The chaos table's columns; the long-horizon ones when they were measured."""
    return CHAOS_COLUMNS + [c for c in LONG_HORIZON_COLUMNS if rows and c in rows[0]]


def chaos_markdown(ch: dict, cfg: DictConfig) -> str:
    if not ch.get("n"):
        return "No flow has an estimate."
    lines = [
        f"- positive: {ch['n_positive']} of {ch['n']} flows "
        f"({100 * ch['share_positive']:.0f} % of the {ch['n_finite']} with an estimate; "
        f"a flow has none when all its trajectories leave the box |x| < bound)",
        f"- raw: median {ch['median']:.4g}, range {ch['min']:.4g} .. {ch['max']:.4g}",
        f"- speed-normalised: median {ch['speed_normalised_median']:.4g}, range "
        f"{ch['speed_normalised_min']:.4g} .. {ch['speed_normalised_max']:.4g} (flows "
        f"whose trajectories came to rest, mean speed < {REST_SPEED:g}, have none: "
        f"{ch['n_at_rest']} of {ch['n']})",
    ]
    if "n_sustained" in ch:
        lines.append(
            f"- sustained over {cfg.chaos.long_horizon}x the horizon: {ch['n_sustained']} "
            f"of {ch['n']} flows (exponent over the long horizon positive and at least "
            f"{SUSTAINED_RATIO:g} of the same trajectories' over the first; linear "
            f"separation, as in a shear, keeps about a third; `lyapunov_long_first` "
            f"and `lyapunov_long` in the CSV)"
        )
    lines += ["", "![Lyapunov exponents](lyapunov_hist.png) ([CSV](chaos.csv))"]
    return "\n".join(lines)
