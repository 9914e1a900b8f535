"""Maximum mean discrepancy with RBF kernels."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def _rbf(x: torch.Tensor, y: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    d2 = torch.cdist(x, y).pow(2)
    return sum(torch.exp(-d2 / (2 * s * s)) for s in sigmas)


def median_distance(x: torch.Tensor) -> float:
    """The median distance between distinct points of ``x`` (n, d): the kernel width that
    scales with the data (a fixed width goes blind as d grows: every pair is far apart)."""
    d = torch.cdist(x, x)
    off = d[~torch.eye(len(x), dtype=torch.bool, device=x.device)]
    return float(off.median())


def resolve_bandwidth(bandwidth: float | str, reference: torch.Tensor) -> float:
    """``bandwidth`` as a number: a number as it is, ``"median"`` the median distance of
    ``reference`` (the start set)."""
    if bandwidth == "median":
        return median_distance(reference)
    if isinstance(bandwidth, str):
        raise ValueError(f"mmd bandwidth={bandwidth!r}: a number > 0, or median")
    return float(bandwidth)


def mmd2(x: torch.Tensor, y: torch.Tensor, sigma: float | Sequence[float] = 0.5) -> torch.Tensor:
    """Unbiased MMD^2 between samples ``x`` (n, d) and ``y`` (m, d).

    ``k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2))`` over the bandwidth(s) ``sigma``. The within-set
    terms leave out the diagonal, so the estimate is unbiased (and may be slightly negative).
    """
    sigmas = [float(sigma)] if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"mmd2 needs (n, d) and (m, d) samples, got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    n, m = len(x), len(y)
    if n < 2 or m < 2:
        raise ValueError("mmd2 needs at least two samples in each set")
    kxx, kyy, kxy = _rbf(x, x, sigmas), _rbf(y, y, sigmas), _rbf(x, y, sigmas)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2 * kxy.mean()


def paired_mmd2(
    x: torch.Tensor, y: torch.Tensor, sigma: float | Sequence[float] = 0.5
) -> torch.Tensor:
    """Unbiased MMD^2 between the marginals of paired samples ``(x_i, y_i)``, e.g. a start set and
    the same points after integration.

    The pairs are i.i.d., so the U-statistic over ``i != j`` of
    ``k(x_i, x_j) + k(y_i, y_j) - k(x_i, y_j) - k(x_j, y_i)`` is unbiased. Unlike :func:`mmd2`
    it leaves out ``k(x_i, y_i)``, which would bias the estimate low when ``y_i`` stays near
    ``x_i`` (at ``y = x`` it is exactly 0).
    """
    sigmas = [float(sigma)] if isinstance(sigma, (int, float)) else [float(s) for s in sigma]
    if x.shape != y.shape or x.ndim != 2:
        raise ValueError(
            f"paired_mmd2 needs two (n, d) sets of the same shape, got {tuple(x.shape)}, "
            f"{tuple(y.shape)}"
        )
    n = len(x)
    if n < 2:
        raise ValueError("paired_mmd2 needs at least two pairs")
    h = _rbf(x, x, sigmas) + _rbf(y, y, sigmas) - _rbf(x, y, sigmas) - _rbf(y, x, sigmas)
    return (h.sum() - h.diagonal().sum()) / (n * (n - 1))


def mmd_over_time(
    trajectory: torch.Tensor,
    sigma: float | Sequence[float] = 0.5,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """MMD^2 between the start set and every frame of a (T, n, d) trajectory.

    Without ``reference`` the frames are compared with the first frame, point by point paired
    (:func:`paired_mmd2`, exactly 0 at the start); with one, each frame with that independent set
    (:func:`mmd2`).
    """
    if reference is None:
        return torch.stack([paired_mmd2(trajectory[0], frame, sigma) for frame in trajectory])
    return torch.stack([mmd2(reference, frame, sigma) for frame in trajectory])
