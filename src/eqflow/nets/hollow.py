"""A hollow network: ``R^d -> R^(d x C)`` whose output ``[i, c]`` does not depend on input ``i``
(the "hollow" dependency structure of Chen and Duvenaud's HollowNets, built here in the
simplest way): one shared first layer ``W x``, from which each coordinate ``i`` removes its own
column (``W x - W[:, i] x_i``), then layers shared by every coordinate acting on each one's
hidden state, then a head per coordinate. Every Jacobian ``d out[:, c] / dx`` has a zero
diagonal, so the divergence of each output channel is exactly 0.

Cost: ``O(B d H^2)`` a pass (linear in d), and ``tangents`` gives Jacobian-vector products of
every channel along given directions in the same pass (forward mode written out layer by
layer), so that the exact flow built on it needs neither a d x d Jacobian nor autograd calls
inside its field."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from eqflow.nets.mlp import _activation_and_slope


class HollowNet(nn.Module):
    def __init__(
        self,
        dim: int,
        channels: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
    ):
        super().__init__()
        if activation not in ("silu", "tanh"):
            raise ValueError(
                f"flow.model.activation={activation!r}: the hollow network's tangents need the "
                f"activation's derivative; use silu or tanh"
            )
        if not hidden:
            raise ValueError("flow.model.hidden needs at least one layer")
        self.dim, self.channels, self.activation = dim, channels, activation
        width = hidden[0]
        self.first = nn.Parameter(torch.randn(width, dim) / math.sqrt(dim))
        # which coordinate a hidden state belongs to (coordinates are not interchangeable)
        self.embedding = nn.Parameter(torch.randn(dim, width) * 0.1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(hidden[:-1], hidden[1:]))
        self.head = nn.Parameter(torch.randn(dim, hidden[-1], channels) / math.sqrt(hidden[-1]))
        self.head_bias = nn.Parameter(torch.zeros(dim, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, d, C)."""
        return self.with_tangents(x, None)[0]

    def with_tangents(
        self, x: torch.Tensor, tangents: torch.Tensor | None, channels: list[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The output (B, d, C) at ``x`` (B, d) and, for ``tangents`` (T, B, d), its directional
        derivatives along each (T, B, d, C): ``[t, b, i, c] = sum_j d out[b, i, c] / d x[b, j]
        tangents[t, b, j]`` (None without tangents); with ``channels`` (T,), only channel
        ``channels[t]`` along tangent t, (T, B, d) (the head's cost once, not C times)."""
        w = self.first  # (H, d)
        pre = (x @ w.T)[:, None, :] - x[:, :, None] * w.T[None] + self.embedding  # (B, d, H)
        d_pre = None
        if tangents is not None:
            d_pre = (tangents @ w.T)[:, :, None, :] - tangents[..., None] * w.T[None, None]
        h, d_h = self._activate(pre, d_pre)
        for layer in self.layers:
            pre = layer(h)
            d_pre = None if d_h is None else d_h @ layer.weight.T
            h, d_h = self._activate(pre, d_pre)
        out = torch.einsum("bih,ihc->bic", h, self.head) + self.head_bias
        if d_h is None:
            return out, None
        if channels is None:
            return out, torch.einsum("tbih,ihc->tbic", d_h, self.head)
        heads = self.head[:, :, channels].permute(2, 0, 1)  # (T, d, H)
        return out, torch.einsum("tbih,tih->tbi", d_h, heads)

    def _activate(self, pre, d_pre):
        h, slope = _activation_and_slope(pre, self.activation)
        return h, None if d_pre is None else d_pre * slope
