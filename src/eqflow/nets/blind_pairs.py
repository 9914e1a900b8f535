"""Blind-pair coefficients for a local skew operator on images.

For every offset ``delta`` of a half stencil (``(0, 0)`` for couplings between the channels of one
pixel, then one of each pair ``+-delta`` within ``reach``), the network gives a C x C matrix of
coefficients ``c_delta(p)`` at every pixel p: the coupling between pixel p and pixel p + delta.
It sees the neighbourhood of p through a convolution whose kernel is masked at both positions of
the pair (0 and delta, every channel), then layers that act on each pixel alone, so that
``c_delta(p)`` does not depend on pixel p or on pixel p + delta: a blind-spot convolution with
two blind spots. The canvas is periodic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def half_stencil(reach: int) -> list[tuple[int, int]]:
    """(0, 0) and one offset of each pair +-delta with max(|dy|, |dx|) <= ``reach``."""
    out = [(0, 0)]
    for dy in range(0, reach + 1):
        for dx in range(-reach, reach + 1):
            if (dy, dx) > (0, 0) and max(abs(dy), abs(dx)) <= reach:
                out.append((dy, dx))
    return out


class BlindPairNet(nn.Module):
    """``(B, C, H, W) -> (B, K, C, C, H, W)``: coefficient ``[k, i, j]`` at p couples channel i
    of pixel p with channel j of pixel p + offsets[k], and does not depend on either pixel."""

    def __init__(
        self,
        channels: int,
        reach: int = 1,
        radius: int = 2,
        hidden: Sequence[int] = (32,),
    ):
        super().__init__()
        if radius < reach:
            raise ValueError(
                f"flow.model.radius={radius} must be >= flow.model.reach={reach}: the "
                f"features' window must hold both pixels of every pair it masks"
            )
        if not hidden:
            raise ValueError("flow.model.hidden needs at least one layer")
        self.channels, self.radius = channels, radius
        self.offsets = half_stencil(reach)
        k, side, width = len(self.offsets), 2 * radius + 1, hidden[0]
        self.features = nn.Parameter(
            torch.randn(k * width, channels, side, side) / math.sqrt(channels * side * side)
        )
        self.features_bias = nn.Parameter(torch.zeros(k * width))
        mask = torch.ones(k, 1, 1, side, side)
        for n, (dy, dx) in enumerate(self.offsets):
            mask[n, ..., radius, radius] = 0
            mask[n, ..., radius + dy, radius + dx] = 0
        self.register_buffer(
            "mask", mask.expand(k, width, 1, side, side).reshape(k * width, 1, side, side).clone()
        )
        sizes = list(hidden) + [channels * channels]
        self.layers = nn.ModuleList(
            nn.Conv2d(k * a, k * b, 1, groups=k) for a, b in zip(sizes[:-1], sizes[1:])
        )
        nn.init.zeros_(self.layers[-1].bias)

    def check_canvas(self, height: int, width: int) -> None:
        if min(height, width) <= 2 * self.radius:
            raise ValueError(
                f"a {height} x {width} canvas is too small for flow.model.radius="
                f"{self.radius}: the periodic window would wrap onto the pair it must not "
                f"see; use a radius < {min(height, width) // 2}"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        self.check_canvas(h, w)
        r = self.radius
        padded = F.pad(x, (r, r, r, r), mode="circular")
        z = F.conv2d(padded, self.features * self.mask, self.features_bias)
        for layer in self.layers:
            z = layer(torch.tanh(z))
        return z.view(b, len(self.offsets), c, c, h, w)
