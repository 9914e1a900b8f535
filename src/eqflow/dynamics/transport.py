"""Advection written as an exact equilibrium flow, v = div A + A(x) s, and what that form
cannot do: carry every creature the same way.

For neighbours p, q = p + e along an axis e of a periodic image, in each channel,

    A[p, q] = -(u_e(p) (x_q^2 - level) + u_e(q) (x_p^2 - level)) / 4 = -A[q, p],

with u_e(p) a velocity that does not depend on pixels p - e, p, p + e. Then (div A)_p =
-u_e(p) (x_{p+e} - x_{p-e}) / 2, the central difference of advection at velocity u, and
v = div A + A s preserves the density whose score is s exactly, for any such u and level
(:func:`exact_advection`; tests against autograd).

What it shows (``scripts/creature_transport.py``, docs/exact_flows.md): with a uniform u, div A
alone is the translation generator T x, exact for a density invariant under the shifts it generates
(scatters at random positions nearly are), and carries a creature along; div A + A s, exact too,
does not. v = div A + A s = div(p A) / p, and the flux of the current div(p A) through a surface is
an integral of p A over the surface's edge. A surface spanning the loop of a creature's translates
can end among images of vanishing density, so no construction with a bounded A (D s,
flow=exact_local or this one) circulates around that loop: counting every orientation, as much goes
forward as back. T x circulates; it is exact without being of that form.
"""

from __future__ import annotations

import torch

# (axis of the image tensor, velocity component) for the two directions of the canvas
AXES = ((-1, 0), (-2, 1))


# central-difference weights of the first derivative, on the neighbours 1, 2, ... pixels ahead
# (those behind take the opposite sign), by the order of accuracy
CENTRAL_WEIGHTS = {2: (1 / 2,), 4: (2 / 3, -1 / 12)}


def central_advection(x: torch.Tensor, u: torch.Tensor, order: int = 2) -> torch.Tensor:
    """-u . grad x by central differences of ``order`` (2 or 4) on periodic images ``x``
    (B, C, H, W), velocities ``u`` (B, 2, H, W) (x then y component, pixels per unit time).
    Its divergence in x is zero when u at a pixel does not read that pixel: a pixel's rate reads
    only its neighbours. Order 4 lags less behind a sharp edge (less dispersion)."""
    if order not in CENTRAL_WEIGHTS:
        raise ValueError(
            f"central differences of order {order}: choose one of {list(CENTRAL_WEIGHTS)}"
        )
    out = torch.zeros_like(x)
    for axis, k in AXES:
        gradient = sum(
            weight * (torch.roll(x, -step, axis) - torch.roll(x, step, axis))
            for step, weight in enumerate(CENTRAL_WEIGHTS[order], start=1)
        )
        out = out - u[:, k : k + 1] * gradient
    return out


def exact_advection(
    x: torch.Tensor, s: torch.Tensor, u: torch.Tensor, level: float = 0.0
) -> torch.Tensor:
    """div A + A s for the advection operator of velocities ``u`` (B, 2, H, W) (x then y
    component, pixels per unit time, blind at each pixel's axis neighbours) on images ``x``
    (B, C, H, W), periodic, with scores ``s`` at ``x``. A[p, p + e] = -(u_e(p) (x_{p+e}^2 -
    level) + u_e(p + e) (x_p^2 - level)) / 4: the ``level`` term's coefficient is blind to both
    pixels, so it leaves div A and exactness as they are and only sets where the stirring A s
    vanishes (at x^2 = level: a saturated channel, at the score's level a, for level = a)."""
    out = central_advection(x, u)  # div A
    for axis, k in AXES:
        uk = u[:, k : k + 1]
        ahead = torch.roll(x, -1, axis)
        pair = -0.25 * (uk * (ahead.pow(2) - level) + torch.roll(uk, -1, axis) * (x.pow(2) - level))
        out = (
            out
            + pair * torch.roll(s, -1, axis)
            - torch.roll(pair, 1, axis) * torch.roll(s, 1, axis)
        )
    return out
