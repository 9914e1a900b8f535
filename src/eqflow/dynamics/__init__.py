"""Divergence estimators, integrators and skew-symmetric constructions (plain torch)."""

from eqflow.dynamics.divergence import (
    divergence,
    divergence_estimates,
    hutchinson_variance,
    jacobian,
)
from eqflow.dynamics.integrators import NoiseStreams, integrate_ode, sde_heun
from eqflow.dynamics.skew import circular_conv, gamma_kernel, skew_kernel, skew_matrix, skew_part

__all__ = [
    "NoiseStreams",
    "circular_conv",
    "divergence",
    "divergence_estimates",
    "gamma_kernel",
    "hutchinson_variance",
    "integrate_ode",
    "jacobian",
    "sde_heun",
    "skew_kernel",
    "skew_matrix",
    "skew_part",
]
