"""Metrics: distribution preservation (MMD), chaos (Lyapunov), fidelity (cosine tables)."""

from eqflow.metrics.fidelity import aligned_abs_cosine, representation, similarity_table
from eqflow.metrics.lyapunov import max_lyapunov
from eqflow.metrics.mmd import mmd2, mmd_over_time, paired_mmd2

__all__ = [
    "aligned_abs_cosine",
    "max_lyapunov",
    "mmd2",
    "mmd_over_time",
    "paired_mmd2",
    "representation",
    "similarity_table",
]
