"""Divergence estimators, training-free constructions and integrators."""
from eqflow.dynamics.divergence import (divergence, divergence_estimates, hutchinson_variance,
                                        jacobian)
from eqflow.dynamics.integrators import integrate_ode, sde_heun
from eqflow.dynamics.training_free import skew_matrix

__all__ = ["divergence", "divergence_estimates", "hutchinson_variance", "jacobian", "integrate_ode",
           "sde_heun", "skew_matrix"]
