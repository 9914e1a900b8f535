"""Skew-symmetric operators: the constant D of a training-free flow v = D s.

On vectors D is a matrix with D^T = -D. On periodic images it is a convolution with circular
padding, skew-symmetric as an operator iff its kernel satisfies K[i, j, u, w] = -K[j, i, -u, -w]
(offsets from the kernel centre); any kernel P gives one, K = P - flip(transpose_channels(P)).
A matrix is the 1 x 1 kernel on d channels. Every D here has unit Frobenius norm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def skew_part(p: torch.Tensor) -> torch.Tensor:
    """The skew-symmetric part of a (C, C, k, k) kernel with odd k, unit Frobenius norm."""
    if p.ndim != 4 or p.shape[0] != p.shape[1] or p.shape[2] != p.shape[3] or p.shape[2] % 2 == 0:
        raise ValueError(f"a skew kernel needs shape (C, C, k, k) with odd k, got {tuple(p.shape)}")
    k = p - p.transpose(0, 1).flip(-1, -2)
    norm = k.norm()
    if norm == 0:
        raise ValueError("the kernel's skew part is zero; draw another P")
    return k / norm


def skew_kernel(
    channels: int,
    radius: int,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A random skew kernel (channels, channels, 2 radius + 1, 2 radius + 1) drawn from
    ``generator``."""
    if channels == 1 and radius == 0:
        raise ValueError(
            "a 1 x 1 skew kernel on one channel is zero (D = -D^T); one-channel "
            "images need a spatial kernel: flow.model.radius=1 or more"
        )
    size = 2 * radius + 1
    p = torch.randn(channels, channels, size, size, generator=generator, dtype=torch.float64)
    return skew_part(p).to(dtype)


def skew_matrix(
    d: int, generator: torch.Generator | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A random skew-symmetric ``d x d`` matrix with unit Frobenius norm: the 1 x 1 skew kernel."""
    if d < 2:
        raise ValueError(f"a skew-symmetric flow needs dimension >= 2, got {d}")
    return skew_kernel(d, 0, generator, dtype)[:, :, 0, 0].contiguous()


def gamma_kernel(gamma: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    """The paper's 1 x 1 two-channel kernel gamma [[0, 1], [-1, 0]], unit Frobenius norm."""
    k = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64) * gamma
    return (k / k.norm()).reshape(2, 2, 1, 1).to(dtype)


def circular_conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Cross-correlation of (B, C, H, W) images with a (C, C, k, k) kernel, periodic edges."""
    r = kernel.shape[-1] // 2
    if r:
        x = F.pad(x, (r, r, r, r), mode="circular")
    return F.conv2d(x, kernel.to(x))
