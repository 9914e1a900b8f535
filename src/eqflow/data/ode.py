"""Snapshots of an ODE system's attractor; the system's field is the ground truth.

A new system needs only its vector field: a callable ``f(x) -> dx/dt`` on ``(B, d)`` tensors,
named in YAML as ``data.vector_field._target_``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from eqflow.data.base import MIN_POINTS, Snapshots, SnapshotSystem, check_data_settings
from eqflow.dynamics.integrators import integrate_ode


class Lorenz:
    """The Lorenz-63 field (sigma, rho, beta)."""

    dim = 3

    def __init__(self, sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0):
        self.sigma, self.rho, self.beta = sigma, rho, beta

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        a, b, c = x.unbind(-1)
        return torch.stack(
            [self.sigma * (b - a), a * (self.rho - c) - b, a * b - self.beta * c], -1
        )


class Lorenz96:
    """The Lorenz-96 field of any dimension N >= 4 (the system's size is the input's last axis):
    dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F, indices cyclic. Chaotic for F = 8 from
    N = 5 or so; its largest Lyapunov exponent for N = 40, F = 8 is about 1.7 per time unit
    (Lorenz 1996)."""

    def __init__(self, forcing: float = 8.0):
        self.forcing = forcing

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] < 4:
            raise ValueError(f"Lorenz-96 needs data.dim >= 4, got {x.shape[-1]}")
        ahead, back2, back1 = (torch.roll(x, k, dims=-1) for k in (-1, 2, 1))
        return (ahead - back2) * back1 - x + self.forcing


class ODESystem(SnapshotSystem):
    """States along ``n_trajectories`` RK4 trajectories of ``vector_field``.

    Starts are ``init_std * N(0, I)``; the first ``burn_in_steps`` steps (the transient towards
    the attractor) are discarded; the remaining ``n_steps`` states of every trajectory are kept
    and standardised per coordinate.
    """

    cache_data = True

    def __init__(
        self,
        vector_field: Callable[[torch.Tensor], torch.Tensor],
        dim: int,
        n_trajectories: int = 10,
        n_steps: int = 5_000,
        dt: float = 0.01,
        burn_in_steps: int = 1_000,
        init_std: float = 1.0,
        standardise: bool = True,
        method: str = "rk4",
    ):
        if not callable(vector_field):
            raise TypeError(
                "data.vector_field must be a callable f(x) -> dx/dt; name it with "
                "_target_ (and _partial_: true for a plain function with settings)"
            )
        check_data_settings(
            dim=dim,
            n_trajectories=n_trajectories,
            n_steps=n_steps,
            dt=dt,
            burn_in_steps=burn_in_steps,
        )
        if n_trajectories * n_steps < MIN_POINTS:
            raise ValueError(
                f"data.n_trajectories x data.n_steps = {n_trajectories} x {n_steps} "
                f"= {n_trajectories * n_steps} snapshots; eqflow needs at least "
                f"{MIN_POINTS} to learn a score and a flow. Fix: raise data.n_steps "
                f"or data.n_trajectories"
            )
        self.vector_field, self.dim = vector_field, int(dim)
        self.n_trajectories, self.n_steps, self.dt = int(n_trajectories), int(n_steps), float(dt)
        self.burn_in_steps, self.init_std = int(burn_in_steps), float(init_std)
        self.standardise, self.method = standardise, method

    def initial_states(self, generator: torch.Generator) -> torch.Tensor:
        """The trajectories' starts (n_trajectories, dim), float64: ``init_std * N(0, I)``."""
        return self.init_std * torch.randn(
            self.n_trajectories, self.dim, generator=generator, dtype=torch.float64
        )

    def generate(self, generator: torch.Generator) -> Snapshots:
        x0 = self.initial_states(generator)
        steps = self.burn_in_steps + self.n_steps
        path = integrate_ode(self.vector_field, x0, self.dt, steps, self.method)
        if not torch.isfinite(path).all():
            raise FloatingPointError(
                "the ODE trajectories diverged; lower data.dt or check the field"
            )
        kept = path[self.burn_in_steps + 1 :]  # (n_steps, n_traj, d)
        return Snapshots.standardised(kept.reshape(-1, self.dim), self.standardise)

    def true_field(self, snapshots: Snapshots) -> Callable[[torch.Tensor], torch.Tensor]:
        shift, scale = snapshots.shift, snapshots.scale

        def field(z: torch.Tensor) -> torch.Tensor:
            s, m = scale.to(z), shift.to(z)
            return self.vector_field(z * s + m) / s

        return field
