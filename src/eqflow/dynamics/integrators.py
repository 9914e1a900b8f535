"""Integrators: deterministic flows through torchdiffeq, the irreversible Langevin SDE by Heun."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchdiffeq import odeint

from eqflow.progress import bar, progress_range


@torch.no_grad()
def integrate_ode(
    f: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    dt: float,
    steps: int,
    method: str = "rk4",
) -> torch.Tensor:
    """Trajectory of ``dx/dt = f(x)`` with a fixed step: shape ``(steps + 1, *x0.shape)``."""
    t = torch.arange(steps + 1, dtype=torch.float64) * dt
    evaluations = {"rk4": 4, "euler": 1, "midpoint": 2}.get(method)
    with bar(steps * evaluations if evaluations else None, "ODE field evaluations") as b:

        def counted(_t, x):
            b.update()
            return f(x)

        return odeint(
            counted, x0, t.to(x0.dtype).to(x0.device), method=method, options={"step_size": dt}
        )


@torch.no_grad()
def sde_heun(
    drift: Callable[[torch.Tensor], torch.Tensor],
    score: Callable[[torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    dt: float,
    steps: int,
    eta: float,
    generator: torch.Generator | None = None,
    callback: Callable[[int, torch.Tensor], None] | None = None,
    drift_from_score: bool = False,
    noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Irreversible Langevin SDE ``dx = (v + eta s) dt + sqrt(2 eta) dW`` by Heun's method.

    One noise draw per step is shared by predictor and corrector. Returns the final state;
    ``callback(step, x)`` sees every state (for trajectories, EMA frames, animations).
    With ``drift_from_score``, ``drift(x, s)`` receives the score already computed at ``x``, so
    a field built from the score (v = D s) costs one score evaluation per drift evaluation.
    ``noise(x)``, when given, returns each step's standard normal draw (shaped like ``x``)
    instead of ``generator`` (e.g. :class:`NoiseStreams`: one stream per part of a batch).
    """

    def a(x):
        if drift_from_score:
            s = score(x)
            return drift(x, s) + eta * s
        return drift(x) + eta * score(x)

    x = x0
    noise_scale = (2 * eta * dt) ** 0.5
    for k in progress_range(steps, "SDE steps"):
        if noise is not None:
            e = noise(x)
        else:  # drawn where the generator lives (a CPU generator also serves CUDA states)
            e = torch.randn(
                x.shape,
                generator=generator,
                dtype=x.dtype,
                device=generator.device if generator is not None else x.device,
            ).to(x.device)
        ax = a(x)
        x_hat = x + ax * dt + noise_scale * e
        x = x + 0.5 * (ax + a(x_hat)) * dt + noise_scale * e
        if callback is not None:
            callback(k + 1, x)
    return x


class NoiseStreams:
    """Standard normal draws for a batch made of parts, part ``i`` (``sizes[i]`` rows) drawn from
    its own generator: a batched SDE whose parts see the same noise as separate runs, each with
    its generator, would (the draw of a part does not depend on the other parts)."""

    def __init__(self, generators: list[torch.Generator], sizes: list[int]):
        if len(generators) != len(sizes):
            raise ValueError(f"{len(generators)} generators for {len(sizes)} parts")
        self.generators, self.sizes = generators, [int(n) for n in sizes]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != sum(self.sizes):
            raise ValueError(
                f"the streams cover {sum(self.sizes)} rows; the batch has {x.shape[0]}"
            )
        parts = [
            torch.randn((n, *x.shape[1:]), generator=g, dtype=x.dtype, device=g.device)
            for g, n in zip(self.generators, self.sizes)
        ]
        return torch.cat(parts).to(x.device)
