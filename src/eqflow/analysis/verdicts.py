"""The uniqueness study's verdicts: each claim of the study as a rule, the measured value and
whether it holds, so that runs on other data seeds (other snapshots, other score models) can be
compared claim by claim."""

from __future__ import annotations

import math

import torch

from eqflow.metrics.paired import bootstrap_difference_interval

# the share of flows that must have a positive exponent (19 of 20)
POSITIVE_SHARE = 0.95


def study_verdicts(
    table: dict, chaos: dict, mmd_curves: dict[str, torch.Tensor], own: str = "learned"
) -> list[dict]:
    """[{claim, value, holds}] for the study of the ``own`` group's flows; ``holds`` is None for
    numbers reported without a rule."""
    out = []

    def add(claim: str, value: str, holds: bool | None) -> None:
        out.append({"claim": claim, "value": value, "holds": holds})

    same = table[(own, own)][0]
    add(f"{own}-{own} |cos| >= 0.99 (one field whatever the seed)", f"{same:.4f}", same >= 0.99)
    if ("ground truth", own) in table or (own, "ground truth") in table:
        truth = _cell(table, own, "ground truth")
        others = {
            g: _cell(table, g, "ground truth")
            for g in ("training-free", "random")
            if (g, "ground truth") in table or ("ground truth", g) in table
        }
        holds = truth >= 0.25 and all(truth > v for v in others.values())
        add(
            "|cos| to the ground truth >= 0.25 and above training-free and random",
            f"{truth:.3f} (" + ", ".join(f"{g} {v:.3f}" for g, v in others.items()) + ")",
            holds,
        )
    if (own, "score") in table:
        score = table[(own, "score")][0]
        add(f"{own}-score |cos| < 0.05 (not the score flow)", f"{score:.4f}", score < 0.05)
    if own in mmd_curves and "training-free" in mmd_curves and own != "training-free":
        diff, low, high = bootstrap_difference_interval(
            mmd_curves[own][:, -1].tolist(), mmd_curves["training-free"][:, -1].tolist()
        )
        add(
            "MMD² at the end no higher than training-free's (each flow from its own start set; "
            "bootstrap 95 % interval of the difference of means not above 0)",
            f"{float(mmd_curves[own][:, -1].mean()):.5f} vs "
            f"{float(mmd_curves['training-free'][:, -1].mean()):.5f}: difference {diff:+.5f} "
            f"[{low:+.5f}, {high:+.5f}]",
            low <= 0,
        )
    out += chaos_verdicts(chaos)
    return out


def chaos_verdicts(chaos: dict) -> list[dict]:
    """The study's claims on chaos, from :func:`chaos_summary`'s counts."""
    n = chaos.get("n", 0)
    if not n:
        return []
    finite, positive = chaos["n_finite"], chaos["n_positive"]
    out = [
        {
            "claim": "an exponent estimate for every flow (no flow sends all its trajectories "
            "out of the data box)",
            "value": f"{finite} of {n}",
            "holds": finite == n,
        },
        {
            "claim": f"at least {POSITIVE_SHARE:.0%} of the flows with a positive largest exponent",
            "value": f"{positive} of {n}",
            "holds": positive >= math.ceil(POSITIVE_SHARE * n),
        },
    ]
    if "n_sustained" in chaos:
        out.append(
            {
                "claim": "sustained over the long horizon (reported, no rule)",
                "value": f"{chaos['n_sustained']} of {n}",
                "holds": None,
            }
        )
    return out


def _cell(table: dict, a: str, b: str) -> float:
    return (table[(a, b)] if (a, b) in table else table[(b, a)])[0]


def verdicts_markdown(verdicts: list[dict]) -> str:
    lines = ["| claim | measured | holds |", "|---|---|---|"]
    for v in verdicts:
        mark = "" if v["holds"] is None else ("yes" if v["holds"] else "**no**")
        lines.append(f"| {v['claim']} | {v['value']} | {mark} |")
    return "\n".join(lines) + "\n"
