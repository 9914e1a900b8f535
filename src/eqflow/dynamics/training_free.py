"""Training-free equilibrium flows: v = D s with a constant skew-symmetric D (PAPER_NOTES 2)."""
from __future__ import annotations

import torch

from eqflow.nets.skew_conv import random_skew_kernel


def skew_matrix(d: int, generator: torch.Generator | None = None,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A random skew-symmetric ``d x d`` matrix with unit Frobenius norm (``A - A^T``, normalised):
    the 1 x 1 skew kernel on ``d`` channels."""
    if d < 2:
        raise ValueError(f"a skew-symmetric flow needs dimension >= 2, got {d}")
    return random_skew_kernel(d, 0, generator, dtype)[:, :, 0, 0].contiguous()
