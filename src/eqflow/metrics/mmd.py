"""Maximum mean discrepancy with RBF kernels."""
from __future__ import annotations

from collections.abc import Sequence

import torch


def _rbf(x: torch.Tensor, y: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    d2 = torch.cdist(x, y).pow(2)
    return sum(torch.exp(-d2 / (2 * s * s)) for s in sigmas)


def mmd2(x: torch.Tensor, y: torch.Tensor, sigma: float | Sequence[float] = 0.5) -> torch.Tensor:
    """Unbiased MMD^2 between samples ``x`` (n, d) and ``y`` (m, d).

    ``k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2))`` over the bandwidth(s) ``sigma``. The within-set
    terms leave out the diagonal, so the estimate is unbiased (and may be slightly negative).
    """
    sigmas = [float(sigma)] if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd2 needs (n, d) and (m, d) samples, got {tuple(x.shape)}, {tuple(y.shape)}")
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("mmd2 needs at least two samples in each set")
    kxx, kyy, kxy = _rbf(x, x, sigmas), _rbf(y, y, sigmas), _rbf(x, y, sigmas)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2 * kxy.mean()


def mmd_over_time(trajectory: torch.Tensor, sigma: float | Sequence[float] = 0.5,
                  reference: torch.Tensor | None = None) -> torch.Tensor:
    """MMD^2 between ``reference`` (default: the first frame) and every frame of (T, n, d)."""
    ref = trajectory[0] if reference is None else reference
    return torch.stack([mmd2(ref, frame, sigma) for frame in trajectory])
