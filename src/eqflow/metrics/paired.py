"""Paired comparison of one method against random baselines measured on the same units.

A unit (a start pattern of Table 2) gives the method one value ``a_s`` and each baseline draw
``b_sd`` a value. The statistics: the share of (unit, draw) pairs in which the method is higher,
the mean over units of the paired difference ``a_s - mean_d b_sd``, and a percentile-bootstrap
interval of that mean, resampling units (the draws of a unit stay together).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

VERDICT_RULE = (
    "above: the bootstrap 95 % interval of the mean paired difference (method minus "
    "the baseline's mean over its draws, per start) lies above 0; below: it lies "
    "under 0; undecided: it contains 0. With one start there is no interval, and the "
    "published one-start rule decides: above when the value exceeds the baseline's "
    "mean + 1 std over its draws, else not above."
)


@dataclass(frozen=True)
class PairedComparison:
    n_units: int
    n_pairs: int
    share_beaten: float  # share of (unit, draw) pairs with method > draw
    mean_difference: float  # mean over units of (method - mean over the unit's draws)
    ci_low: float
    ci_high: float
    verdict: str  # above | below | undecided | not above (see VERDICT_RULE)

    def as_dict(self) -> dict:
        return asdict(self)


def bootstrap_mean_interval(
    values: torch.Tensor,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of the mean of ``values`` (one per unit)."""
    values = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = len(values)
    if n == 0:
        raise ValueError("no values to bootstrap")
    if n == 1:
        return float(values[0]), float(values[0])
    idx = torch.randint(n, (n_boot, n), generator=generator or torch.Generator().manual_seed(0))
    means = values[idx].mean(dim=1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(means, q).tolist()
    return low, high


def bootstrap_difference_interval(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """mean(a) - mean(b) for two independent groups, and its percentile-bootstrap interval
    (each group resampled on its own)."""
    ta = torch.as_tensor([float(v) for v in a], dtype=torch.float64)
    tb = torch.as_tensor([float(v) for v in b], dtype=torch.float64)
    if not len(ta) or not len(tb):
        raise ValueError("both groups need at least one value")
    g = torch.Generator().manual_seed(seed)
    means_a = ta[torch.randint(len(ta), (n_boot, len(ta)), generator=g)].mean(1)
    means_b = tb[torch.randint(len(tb), (n_boot, len(tb)), generator=g)].mean(1)
    q = torch.tensor([(1 - level) / 2, (1 + level) / 2], dtype=torch.float64)
    low, high = torch.quantile(means_a - means_b, q).tolist()
    return float(ta.mean() - tb.mean()), low, high


def paired_comparison(
    method: Sequence[float],
    draws: Sequence[Sequence[float]],
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
) -> PairedComparison:
    """``method[s]`` against ``draws[s]`` (the baseline's draws on unit ``s``)."""
    if len(method) != len(draws):
        raise ValueError(f"{len(method)} method values for {len(draws)} units of draws")
    if not len(method) or any(len(d) == 0 for d in draws):
        raise ValueError("every unit needs a method value and at least one baseline draw")
    a = torch.tensor([float(v) for v in method], dtype=torch.float64)
    beaten = sum(int(a_s > float(b)) for a_s, d in zip(a, draws) for b in d)
    pairs = sum(len(d) for d in draws)
    diff = a - torch.tensor([sum(map(float, d)) / len(d) for d in draws], dtype=torch.float64)
    low, high = bootstrap_mean_interval(
        diff, n_boot=n_boot, level=level, generator=torch.Generator().manual_seed(seed)
    )
    if len(a) >= 2:
        verdict = "above" if low > 0 else "below" if high < 0 else "undecided"
    else:
        pooled = torch.tensor([float(b) for b in draws[0]], dtype=torch.float64)
        spread = float(pooled.std()) if len(pooled) > 1 else 0.0
        verdict = "above" if float(a[0]) > float(pooled.mean()) + spread else "not above"
    return PairedComparison(len(a), pairs, beaten / pairs, float(diff.mean()), low, high, verdict)
