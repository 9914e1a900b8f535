"""Where each creature on an image points, as a velocity field: the heading behind
``flow=glide`` (:class:`eqflow.models.glide.GlideFlow`).

A creature's heading is the dipole of one colour contrast f = w . x over its body, with channel
weights w fixed once from the data (:func:`heading_channels`): the combination whose local
dipoles are strongest among those with no net contrast against the background (a net contrast
turns the dipole near each pixel outward from the body's middle instead of from its back to its
front). Within a Gaussian window about each pixel, about a body wide, the heading h is the first
moment of f about the centre of |f|, per unit of |f| (:func:`heading_field`): zero for a blob
of one sign, the creature's polarity for one whose contrast changes sign from back to front,
about the same wherever on the body the window sits. The velocity h / max(|h|, reference) has
unit speed on a whole creature and is proportional to h for weaker polarities.
"""

from __future__ import annotations

import math

import torch

from eqflow.dynamics.skew import circular_conv

HISTOGRAM_BINS = 64


def _gaussian(sigma: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(xs, ys, g) on the square of side 2 ceil(2.5 sigma) + 1: offsets and Gaussian weights."""
    radius = math.ceil(2.5 * sigma)
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    ys, xs = torch.meshgrid(r, r, indexing="ij")
    return xs, ys, torch.exp(-(xs**2 + ys**2) / (2 * sigma**2))


def dipole_kernel(sigma: float) -> torch.Tensor:
    """(2, 1, k, k): the Gaussian-weighted offsets G(r) r (x then y component), normalised by
    sum G, k = 2 ceil(2.5 sigma) + 1. Odd in r, so a uniform image reads zero."""
    xs, ys, g = _gaussian(sigma)
    return torch.stack([g * xs, g * ys]).unsqueeze(1) / g.sum()


def gaussian_window(sigma: float) -> torch.Tensor:
    """(1, 1, k, k): a Gaussian window of unit sum, k = 2 ceil(2.5 sigma) + 1."""
    _, _, g = _gaussian(sigma)
    return (g / g.sum())[None, None]


def background_colour(x: torch.Tensor) -> torch.Tensor:
    """(C,): each channel's most common value over images ``x`` (N, C, H, W) in [-1, 1]: the
    median of the values in its fullest histogram bin."""
    out = []
    for channel in x.transpose(0, 1).flatten().view(x.shape[1], -1).float():
        counts = torch.histc(channel, HISTOGRAM_BINS, -1, 1)
        low = -1 + 2 * int(counts.argmax()) / HISTOGRAM_BINS
        inside = channel[(channel >= low) & (channel <= low + 2 / HISTOGRAM_BINS)]
        out.append(inside.median())
    return torch.stack(out)


def heading_channels(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C,) unit channel weights w whose contrast f = w . x has the strongest local dipoles
    (:func:`dipole_kernel` of ``sigma``) over images ``x`` (N, C, H, W), among the weights with
    no net contrast against the background (:func:`background_colour`). Sign: the largest
    weight is positive."""
    kernel = dipole_kernel(sigma)
    n, c = x.shape[:2]
    dipoles = circular_conv(x.reshape(n * c, 1, *x.shape[-2:]).float(), kernel)
    dipoles = dipoles.reshape(n, c, -1)
    moments = torch.einsum("nap,nbp->ab", dipoles, dipoles).double()
    mass = (x.float() - background_colour(x).view(1, c, 1, 1)).sum((0, 2, 3)).double()
    keep = torch.eye(c, dtype=torch.float64)
    if mass.norm() > 0:
        keep = keep - torch.outer(mass, mass) / mass.dot(mass)
    values, vectors = torch.linalg.eigh(keep @ moments @ keep)
    if c < 2 or values[-1] <= 1e-12 * moments.trace():
        raise ValueError(
            f"the data's {c} channel(s) hold no colour contrast without a net contrast against "
            f"the background: a creature's front cannot be told from its back. flow=glide needs "
            f"creatures of at least two colours (an RGB icon); use flow=training_free"
        )
    w = vectors[:, -1]
    return (w * torch.sign(w[w.abs().argmax()])).float()


def contrast(x: torch.Tensor, w: torch.Tensor, rest: float, dead_zone: float) -> torch.Tensor:
    """(B, 1, H, W): f = w . x - ``rest`` over images ``x`` (B, C, H, W), shrunk towards zero by
    ``dead_zone`` (a denoised background's faint residue reads nothing)."""
    f = (x * w.to(x).view(1, -1, 1, 1)).sum(1, keepdim=True) - rest
    return torch.nn.functional.softshrink(f, dead_zone) if dead_zone > 0 else f


def heading_field(f: torch.Tensor, kernels: torch.Tensor, floor: float) -> torch.Tensor:
    """(B, 2, H, W): each pixel's heading h from the contrast ``f`` (B, 1, H, W) of
    :func:`contrast`, periodic: within a Gaussian window about the pixel, the first moment of f
    about the centre of |f|, per unit of |f| in the window (+ ``floor``). A creature of one
    sign of f reads none (its moment about its own centre vanishes); one whose f changes sign
    from back to front reads its polarity, about the same length wherever the window sits on
    it. ``kernels``: :func:`moment_kernels`."""
    both = torch.cat([f, f.abs()], 1).flatten(0, 1)[:, None]  # (2B, 1, H, W)
    moments = circular_conv(both, kernels).view(f.shape[0], 2, 3, *f.shape[-2:])
    signed, absolute = moments[:, 0], moments[:, 1]  # (B, 3, H, W): mass, x and y moments
    mass = absolute[:, :1].clamp_min(torch.finfo(f.dtype).tiny ** 0.5)
    centre = absolute[:, 1:] / mass
    return (signed[:, 1:] - signed[:, :1] * centre) / (absolute[:, :1] + floor)


def moment_kernels(sigma: float) -> torch.Tensor:
    """(3, 1, k, k): a Gaussian window of unit sum and its first moments along x and y."""
    return torch.cat([gaussian_window(sigma), dipole_kernel(sigma)])


def capped(h: torch.Tensor, reference: float) -> torch.Tensor:
    """h / max(|h|, ``reference``): unit length for |h| >= reference, proportional below."""
    return h / h.norm(dim=1, keepdim=True).clamp_min(reference)
