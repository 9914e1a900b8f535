"""Batch normalisation without affine parameters that composes with torch.func."""

from __future__ import annotations

import torch
from torch import nn


class NonAffineBatchNorm(nn.Module):
    """Per-dimension ``(h - mean) / std`` over the batch (training) or running stats (eval).

    It forces a learned flow to have zero mean and unit scale (no trivial ``v = 0`` solution).
    Unlike ``nn.BatchNorm1d`` the forward pass never mutates buffers, so it is safe under
    ``torch.func.jvp``/``vmap``: running statistics are updated explicitly with
    :meth:`update_running_stats` from outside any transform.

    The batch is the last axis but one: ``members`` = K keeps K sets of statistics for inputs
    (K, B, d), one per ensemble member.
    """

    def __init__(
        self, dim: int, momentum: float = 0.1, eps: float = 1e-5, members: int | None = None
    ):
        super().__init__()
        self.momentum = momentum
        self.eps = eps
        shape = (dim,) if members is None else (members, 1, dim)
        self.register_buffer("running_mean", torch.zeros(shape))
        self.register_buffer("running_var", torch.ones(shape))

    def batch_stats(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return (
            h.mean(dim=-2, keepdim=h.ndim > 2),
            h.var(dim=-2, unbiased=False, keepdim=h.ndim > 2),
        )

    def stats(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) the forward pass uses for ``h`` in the current mode."""
        if self.training:
            mean, var = self.batch_stats(h)
        else:
            mean, var = self.running_mean, self.running_var
        return mean, torch.sqrt(var + self.eps)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        mean, std = self.stats(h)
        return (h - mean) / std

    def with_running_stats(self, h: torch.Tensor) -> torch.Tensor:
        """``(h - running mean) / running std`` in either mode (how a trained flow is used)."""
        return (h - self.running_mean) / torch.sqrt(self.running_var + self.eps)

    @torch.no_grad()
    def update_running_stats(self, h: torch.Tensor) -> None:
        mean, var = self.batch_stats(h.detach())
        n = h.shape[-2]
        var = var * n / max(n - 1, 1)
        self.running_mean.lerp_(mean, self.momentum)
        self.running_var.lerp_(var, self.momentum)

    @torch.no_grad()
    def set_running_stats(self, h: torch.Tensor) -> None:
        """Replace the running statistics by those of ``h`` (a recalibration on many points)."""
        self.running_mean.copy_(h.mean(-2, keepdim=h.ndim > 2))
        self.running_var.copy_(h.var(-2, keepdim=h.ndim > 2))
