"""MLPs of the low-dimensional experiments: the score network, the flow network and the energy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from eqflow.nets.norm import NonAffineBatchNorm

ACTIVATIONS = {"relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def mlp(sizes: Sequence[int], activation: str) -> nn.Sequential:
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class PositionalEncoding(nn.Module):
    """``[x, sin(2^i x), cos(2^i x) for i < n_freqs]``: ``d -> d (1 + 2 n_freqs)``."""

    def __init__(self, n_freqs: int = 4):
        super().__init__()
        self.n_freqs = n_freqs
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freqs, dtype=torch.float32))

    def out_dim(self, dim: int) -> int:
        return dim * (1 + 2 * self.n_freqs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.n_freqs == 0:
            return x
        scaled = x.unsqueeze(-1) * self.freqs  # (..., d, F)
        feats = torch.cat([scaled.sin(), scaled.cos()], dim=-1).flatten(-2)
        return torch.cat([x, feats], dim=-1)


class ScoreMLP(nn.Module):
    """``(x, 2t - 1) -> hidden -> d`` with a skip of ``x`` added to the output."""

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        skip: bool = True,
    ):
        super().__init__()
        self.net = mlp([dim + 1, *hidden, dim], activation)
        self.skip = skip

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1).expand(x.shape[0], 1).to(x)
        out = self.net(torch.cat([x, 2 * t - 1], dim=-1))
        return out + x if self.skip else out


class EnergyMLP(nn.Module):
    """A conservative field: ``(x, t) -> grad_x E(x, t)`` with the scalar energy
    E = mlp(x, 2t - 1) + |x|^2 / 2 (the quadratic term is the identity skip of
    :class:`ScoreMLP`). Its Jacobian, the energy's Hessian, is symmetric by construction.

    The gradient is written out layer by layer (backpropagation by hand through the MLP): plain
    tensor operations, so the score's Jacobian (forward mode), the training's backward pass
    and ``torch.compile`` all see an ordinary function, without a nested autograd call."""

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64), activation: str = "silu"):
        super().__init__()
        if activation not in ("silu", "tanh"):
            raise ValueError(
                f"score.model.activation={activation!r}: the energy's gradient needs "
                f"the activation's derivative; use silu or tanh"
            )
        self.activation = activation
        self.net = mlp([dim + 1, *hidden, 1], activation)

    def _inputs(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.reshape(-1, 1).expand(x.shape[0], 1).to(x)
        return torch.cat([x, 2 * t - 1], dim=-1)

    def energy(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.net(self._inputs(x, t))[:, 0] + 0.5 * x.pow(2).sum(-1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        h, slopes = self._inputs(x, t), []
        for layer in linears[:-1]:
            pre = layer(h)
            h, slope = _activation_and_slope(pre, self.activation)
            slopes.append(slope)
        grad = linears[-1].weight.expand(x.shape[0], -1)  # dE / d(last hidden)
        for layer, slope in zip(reversed(linears[:-1]), reversed(slopes)):
            grad = (grad * slope) @ layer.weight
        return grad[:, : x.shape[1]] + x


def _activation_and_slope(h: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    if name == "silu":
        sig = torch.sigmoid(h)
        return h * sig, sig * (1 + h * (1 - sig))
    t = torch.tanh(h)
    return t, 1 - t * t


class NormalisedField(nn.Module):
    """A field ``norm(net(encoding(x)))``: subclasses set ``encoding``, ``net`` and ``norm``."""

    def pre_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.encoding(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.pre_norm(x))

    def with_running_stats(self, x: torch.Tensor) -> torch.Tensor:
        """The field as a trained net gives it: normalised by the running statistics."""
        return self.norm.with_running_stats(self.pre_norm(x))


class FlowMLP(NormalisedField):
    """Positional encoding -> smooth MLP -> non-affine batch norm (the published flow net).

    ``pre_norm(x)`` is a per-sample function (safe for vmap/jvp); ``forward`` applies the norm.
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        n_freqs: int = 4,
        norm_momentum: float = 0.1,
    ):
        super().__init__()
        if activation == "relu":
            raise ValueError(
                "flow.model.activation=relu has a zero second derivative; the divergence "
                "loss needs a smooth activation (silu, tanh, gelu)"
            )
        self.encoding = PositionalEncoding(n_freqs)
        self.net = mlp([self.encoding.out_dim(dim), *hidden, dim], activation)
        self.norm = NonAffineBatchNorm(dim, momentum=norm_momentum)
