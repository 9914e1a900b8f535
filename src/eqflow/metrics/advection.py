"""How much of an image field is rigid motion: the share of ``v`` that a translation of the
image explains. Moving an image x by a velocity (a, b) changes it by -(a dx/dh + b dx/dw); the
Jacobian of that change (a central difference on the periodic grid) is skew, so a field of
least strain may favour it. This measures whether a flow does."""

from __future__ import annotations

import torch


def periodic_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences of (B, C, H, W) images along H and W on the periodic grid."""
    dh = (torch.roll(x, -1, dims=-2) - torch.roll(x, 1, dims=-2)) / 2
    dw = (torch.roll(x, -1, dims=-1) - torch.roll(x, 1, dims=-1)) / 2
    return dh, dw


def translation_share(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per image, the share of |v|^2 explained by the best global translation of ``x``: the
    least-squares fit of ``v`` in the span of dx/dh and dx/dw, ||P v||^2 / ||v||^2 in [0, 1].
    1 for a field that moves the image rigidly; about 2 / (C H W) for a field unrelated to it."""
    dh, dw = (g.flatten(1).double() for g in periodic_gradients(x))
    vf = v.flatten(1).double()
    basis = torch.stack([dh, dw], dim=-1)  # (B, D, 2)
    gram = basis.transpose(1, 2) @ basis
    coef = torch.linalg.lstsq(gram, (basis.transpose(1, 2) @ vf.unsqueeze(-1))).solution
    explained = (basis @ coef).squeeze(-1)
    return (explained.square().sum(1) / vf.square().sum(1).clamp_min(1e-300)).float()
