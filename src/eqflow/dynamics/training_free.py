"""Training-free equilibrium flows: v = D s with a constant skew-symmetric D (PAPER_NOTES 2)."""
from __future__ import annotations

import torch


def skew_matrix(d: int, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A random skew-symmetric ``d x d`` matrix with unit Frobenius norm (``A - A^T``, normalised)."""
    if d < 2:
        raise ValueError(f"a skew-symmetric flow needs dimension >= 2, got {d}")
    a = torch.randn(d, d, generator=generator, dtype=torch.float64)
    skew = a - a.T
    return (skew / skew.norm()).to(dtype)
