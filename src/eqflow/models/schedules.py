"""Noise schedules of the low-dimensional diffusion model (docs/method.md §3)."""

from __future__ import annotations

import math

import torch


class CosineSchedule:
    """The published discrete cosine schedule.

    ``alpha_bar[k] = (cos(pi k / (n-1)) (1 - 2 eps) + 1) / 2`` on ``n`` grid points; a continuous
    time ``t`` in [0, 1] maps to index ``floor(t (n - 1))``.
    """

    def __init__(self, num_steps: int = 100, eps: float = 1e-3):
        if num_steps < 2:
            raise ValueError(f"num_steps must be >= 2, got {num_steps}")
        self.num_steps = num_steps
        grid = torch.arange(num_steps, dtype=torch.float64) / (num_steps - 1)
        self.alpha_bar = ((torch.cos(math.pi * grid) * (1 - 2 * eps) + 1) / 2).float()

    def index(self, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t)
        return torch.floor(t * (self.num_steps - 1) + 1e-9).long().clamp(0, self.num_steps - 1)

    def alpha(self, t: torch.Tensor | float) -> torch.Tensor:
        """alpha_bar at continuous time(s) ``t``."""
        return self.alpha_bar.to(torch.as_tensor(t).device)[self.index(t)]

    def time_of_index(self, k: torch.Tensor) -> torch.Tensor:
        return k.float() / (self.num_steps - 1)
