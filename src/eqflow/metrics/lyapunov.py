"""Largest Lyapunov exponent by Benettin's renormalisation method, in float64."""

from __future__ import annotations

from collections.abc import Callable

import torch

from eqflow.progress import progress_range

# mean speed below which a trajectory counts as having come to rest on a fixed point
REST_SPEED = 1e-3


def rk4_step(f: Callable, x: torch.Tensor, dt: float) -> torch.Tensor:
    k1 = f(x)
    k2 = f(x + 0.5 * dt * k1)
    k3 = f(x + 0.5 * dt * k2)
    k4 = f(x + dt * k3)
    return x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


@torch.no_grad()
def max_lyapunov(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    dt: float,
    steps: int,
    burn_in: int = 0,
    renorm_every: int = 1,
    perturbation: float = 1e-8,
    bound: float | None = None,
    generator: torch.Generator | None = None,
    rest_speed: float = REST_SPEED,
    record_at: int | None = None,
) -> dict:
    """Largest Lyapunov exponent of ``dx/dt = f(x)`` from the starts ``x0`` (B, d).

    Benettin's method: every start is paired with a twin displaced by ``perturbation`` along a
    random direction; both are advanced by RK4 in float64 (one batched call per stage) and the
    twin is pulled back to distance ``perturbation`` every ``renorm_every`` steps, the log of
    the stretch being accumulated. ``f`` must act per sample and accept float64 input.

    Trajectories that leave the box ``max_i |x_i| < bound`` or turn non-finite are dropped. Returns
    the mean exponent over the kept trajectories (``lyapunov``), the exponents per trajectory, the
    mean speed |f(x)| along them, the speed-normalised exponent (per unit of distance travelled) and
    the number kept. Trajectories whose mean speed is below ``rest_speed`` have come to rest on a
    fixed point (``n_at_rest``); when the mean speed over all kept trajectories is below it, the
    speed-normalised exponent is NaN (a ratio of two vanishing numbers, not a rate).
    ``record_at`` (a step count): also return the exponent of the same kept trajectories over
    their first ``record_at`` steps (``lyapunov_at_record``), to see whether it holds over time.
    """
    directions = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
    return max_lyapunov_groups(
        f,
        x0,
        directions,
        dt,
        steps,
        burn_in,
        renorm_every,
        perturbation,
        bound,
        rest_speed,
        record_at,
        groups=1,
    )[0]


@torch.no_grad()
def max_lyapunov_groups(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    directions: torch.Tensor,
    dt: float,
    steps: int,
    burn_in: int = 0,
    renorm_every: int = 1,
    perturbation: float = 1e-8,
    bound: float | None = None,
    rest_speed: float = REST_SPEED,
    record_at: int | None = None,
    groups: int = 1,
) -> list[dict]:
    """:func:`max_lyapunov` of ``groups`` equal consecutive blocks of starts integrated at once
    (e.g. several fields' trajectories, ``f`` giving block g field g's velocity), with the
    twins' initial ``directions`` given; one result per block, as if measured alone."""
    _check_settings(x0.shape[0], dt, steps, renorm_every, perturbation, record_at, groups)
    x = x0.detach().to(torch.float64)
    n = x.shape[0]
    for _ in range(burn_in):
        x = rk4_step(f, x, dt)
    w = directions.to(dtype=torch.float64, device=x.device)
    pair = torch.cat([x, x + perturbation * w / w.norm(dim=-1, keepdim=True)])
    log_growth = torch.zeros(n, dtype=torch.float64, device=x.device)
    speed = torch.zeros_like(log_growth)
    alive = torch.ones(n, dtype=torch.bool, device=x.device)
    recorded = None
    for k in progress_range(steps, "Lyapunov exponents"):
        pair = rk4_step(f, pair, dt)
        x, twin = pair[:n], pair[n:]
        speed += f(x).norm(dim=-1)
        if (k + 1) % renorm_every == 0 or k == steps - 1:
            pair = _renormalise(x, twin, x0, alive, log_growth, perturbation, bound)
        if record_at is not None and k + 1 == record_at:
            recorded = log_growth.clone() / (record_at * dt)
    exponents = log_growth / (steps * dt)
    blocks = [t.chunk(groups) for t in (exponents, speed / steps, alive)]
    recorded = [None] * groups if recorded is None else recorded.chunk(groups)
    return [_summary(e, v, a, r, rest_speed) for e, v, a, r in zip(*blocks, recorded, strict=True)]


def _check_settings(
    n: int,
    dt: float,
    steps: int,
    renorm_every: int,
    perturbation: float,
    record_at: int | None,
    groups: int,
) -> None:
    if steps < 1 or dt <= 0 or perturbation <= 0:
        raise ValueError(
            f"max_lyapunov needs steps >= 1, dt > 0, perturbation > 0; "
            f"got {steps}, {dt}, {perturbation}"
        )
    if record_at is not None and (
        not 1 <= record_at <= steps or (record_at % renorm_every and record_at != steps)
    ):
        raise ValueError(f"record_at={record_at} must be a renormalisation step in 1..{steps}")
    if n % groups:
        raise ValueError(f"{n} starts do not split into {groups} equal groups")


def _renormalise(
    x: torch.Tensor,
    twin: torch.Tensor,
    x0: torch.Tensor,
    alive: torch.Tensor,
    log_growth: torch.Tensor,
    perturbation: float,
    bound: float | None,
) -> torch.Tensor:
    """One renormalisation (in place on ``alive`` and ``log_growth``): the twins' log growth is
    added, starts that left ``bound`` or went non-finite are dropped (parked on their finite
    start), and the new (state, twin) pair is returned with the twin back at ``perturbation``."""
    gap = twin - x
    dist = gap.norm(dim=-1)
    alive &= torch.isfinite(dist) & (dist > 0) & torch.isfinite(x).all(-1)
    if bound is not None:
        alive &= x.abs().amax(dim=-1) < bound
    safe = dist.clamp_min(1e-300)
    log_growth += torch.where(alive, (safe / perturbation).log(), 0.0)
    x = torch.where(alive[:, None], x, x0.to(x))
    gap = torch.where(alive[:, None], gap / safe[:, None], torch.ones_like(gap))
    return torch.cat([x, x + perturbation * gap])


def _summary(
    exponents: torch.Tensor,
    mean_speed: torch.Tensor,
    alive: torch.Tensor,
    recorded: torch.Tensor | None,
    rest_speed: float,
) -> dict:
    kept = int(alive.sum())
    lam = exponents[alive].mean().item() if kept else float("nan")
    mspeed = mean_speed[alive].mean().item() if kept else float("nan")
    moving = kept and mspeed >= rest_speed
    out = {
        "lyapunov": lam,
        "per_trajectory": exponents[alive].cpu(),
        "mean_speed": mspeed,
        "lyapunov_speed_normalised": lam / mspeed if moving else float("nan"),
        "n_kept": kept,
        "n_at_rest": int((mean_speed[alive] < rest_speed).sum()),
        "n_total": len(exponents),
    }
    if recorded is not None:
        out["lyapunov_at_record"] = recorded[alive].mean().item() if kept else float("nan")
    return out
