"""How stiff the irreversible Langevin SDE is where the denoiser is sure, and how many Heun
substeps keep its step stable.

For a score at noise level 1 - a, J_s = -I / (1 - a) wherever the clean image is certain (most
of a canvas: the background, the inside of a creature). A drift v = A(x) s with a skew A whose
spectral radius is rho then linearises, with the Langevin term eta s, to -(A + eta I) / (1 - a):
eigenvalues -(eta +- i rho) / (1 - a). The exact SDE damps those modes by exp(-eta dt / (1 - a))
a step; Heun's method multiplies them by |1 + z + z^2 / 2|, z = -(eta + i rho) dt / (1 - a),
which exceeds the damping as rho dt / (1 - a) grows and exceeds 1 (growth: the scheme, not
the flow, breaks the density) once the rotation is fast enough. A random unit channel kernel
(rho = 1 / sqrt 2) sits at 1.004 times the damping at the published dt 0.05 and level; a
learned local operator at the same rms speed can be twice as stiff.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# Heun may amplify the stiffest mode at most this much more than the SDE damps it, per step
SUBSTEP_TOLERANCE = 0.01
MOST_SUBSTEPS = 64


def skew_operator_norm(
    apply: Callable[[torch.Tensor], torch.Tensor],
    shape: tuple,
    generator: torch.Generator,
    iterations: int = 40,
) -> torch.Tensor:
    """The spectral radius, per image, of a skew linear operator ``apply`` on tensors of
    ``shape`` (B, ...), by power iteration on A^T A = -A A."""
    u = torch.randn(shape, generator=generator, dtype=torch.float32)
    norm = torch.zeros(shape[0])
    for _ in range(iterations):
        w = -apply(apply(u))
        size = w.flatten(1).norm(dim=1)
        norm = (size / u.flatten(1).norm(dim=1)).sqrt()
        u = w / size.clamp_min(1e-30).view(-1, *([1] * (len(shape) - 1)))
    return norm


def heun_amplification(rho: float, eta: float, dt: float, noise_var: float) -> float:
    """|1 + z + z^2 / 2| for z = -(eta + i rho) dt / noise_var: what one Heun step does to
    the stiffest mode of the linearised drift."""
    z = complex(-eta, rho) * dt / noise_var
    return abs(1 + z + z * z / 2)


def sde_damping(eta: float, dt: float, noise_var: float) -> float:
    """exp(-eta dt / noise_var): what the exact SDE does to that mode over ``dt``."""
    return math.exp(-eta * dt / noise_var)


def step_excess(rho: float, eta: float, dt: float, noise_var: float, substeps: int) -> float:
    """How much more ``substeps`` Heun steps of dt / substeps amplify the stiffest mode than the
    SDE damps it over dt (1: exact; above 1 + SUBSTEP_TOLERANCE the scheme leaks)."""
    amplification = heun_amplification(rho, eta, dt / substeps, noise_var) ** substeps
    return amplification / sde_damping(eta, dt, noise_var)


def stable_substeps(rho: float, eta: float, dt: float, noise_var: float) -> int:
    """The fewest Heun substeps per step of ``dt`` whose excess over the SDE's own damping of
    the stiffest mode is at most SUBSTEP_TOLERANCE."""
    for k in range(1, MOST_SUBSTEPS + 1):
        if step_excess(rho, eta, dt, noise_var, k) <= 1 + SUBSTEP_TOLERANCE:
            return k
    raise ValueError(
        f"the flow's drift is too stiff for dt={dt}: spectral radius {rho:.3g} at noise level "
        f"{noise_var:.3g} needs more than {MOST_SUBSTEPS} Heun substeps a step; lower "
        f"flow.model.speed or measure.creatures.dt"
    )


def drift_is_skew_in_score(drift, x: torch.Tensor, u: torch.Tensor, w: torch.Tensor) -> bool:
    """Whether ``drift(x, s)`` is a skew linear map of ``s`` at ``x`` (v = A(x) s, A^T = -A),
    checked on the directions ``u`` and ``w``: the stiffness check reads A through it."""
    au, aw = drift(x, u), drift(x, w)
    linear = (drift(x, 2.0 * u) - 2.0 * au).norm() <= 1e-4 * au.norm().clamp_min(1e-30)
    skew = abs(float((u * aw).sum() + (au * w).sum())) <= 1e-4 * float(u.norm() * aw.norm())
    return bool(linear) and skew
