"""An exact equilibrium flow on images that carries each creature along its own heading:
v = div A + A(x) s with A(x) the skew operator of local advection.

Why a flow of the form v = A(x) s cannot make creatures travel: near the data the score points
off the data (s ~ -(noise) / (1 - a)), so the part of A s along the data, where a creature's
position lives, has mean zero over the noise: creatures jitter and come back. Transport along
the data needs the other half of the exact construction, div A.

For a pixel pair (p, q = p + e) along axis e and each channel, with y = x:

    A[p, q] = -(u_e(p) y_q^2 + u_e(q) y_p^2) / 4 = -A[q, p],

where u_e(p), the velocity along e at pixel p, does not depend on pixels p - e, p or p + e (a
convolution masked there). Then (div A)_p = -u_e(p) (y_{p+e} - y_{p-e}) / 2, the central
difference of advection at velocity u: a constant u translates the image rigidly (its Jacobian
is skew), and v = div A + A s preserves the score model's density exactly for any u
(div(p v) = 0 for any smooth skew A). The A s part is what exactness costs: it stirs the score
where the image is bright or dark, and vanishes for a density invariant under the translation.

u is a heading: ``top_speed`` times the dipole of one colour contrast c = w . (x - background)
within a Gaussian window of width ``spread``, over the window's first absolute moment of c (so
|u_x|, |u_y| <= top_speed, reached only by a contrast all on one side), blind at the three
pixels. w is read from the training images (once, at build): the contrast whose dipole is
strongest per unit of its variance, among those that give an icon's mean colour no weight (so
that a window's mean contrast does not squeeze or stretch the creature it moves). An icon in one
colour has no such contrast and is only jostled by the noise's; an asymmetric icon moves along
its own axis, each creature in the direction its orientation gives it. Training-free: nothing is
fitted beyond the background colour and w.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from eqflow.models.flow import FlowBase

# (axis of the image tensor, heading component) for the two directions of the canvas
AXES = ((-1, 0), (-2, 1))
# training images read to set the background and the contrast
SETUP_IMAGES = 256
# added to the heading's denominator (a window with no contrast at all: no heading)
SPREAD_FLOOR = 1e-3


def heading_kernels(spread: float) -> torch.Tensor:
    """(3, 1, S, S) correlation kernels r_x G(r), r_y G(r) and |r| G(r), G a Gaussian of width
    ``spread`` cut at 2.5 widths; the first two masked at the centre and at its two neighbours
    along their axis, the third at the centre and its four neighbours (blind where both are)."""
    reach = max(2, math.ceil(2.5 * spread))
    offsets = torch.arange(-reach, reach + 1, dtype=torch.float64)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    gauss = torch.exp(-(dx**2 + dy**2) / (2 * spread**2))
    kernels = torch.stack([dx * gauss, dy * gauss, torch.sqrt(dx**2 + dy**2) * gauss])
    for k, (my, mx) in enumerate(((0, 1), (1, 0))):
        for step in (-1, 1):
            kernels[k, reach + step * my, reach + step * mx] = 0.0
            kernels[2, reach + step * my, reach + step * mx] = 0.0
    kernels[:, reach, reach] = 0.0
    return (kernels / kernels[2].sum())[:, None].float()


def transport_field(
    x: torch.Tensor, s: torch.Tensor, u: torch.Tensor, level: float = 0.0
) -> torch.Tensor:
    """div A + A s for the advection operator of velocities ``u`` (B, 2, H, W) (x then y
    component, pixels per unit time, blind at each pixel's axis neighbours) on images ``x``
    (B, C, H, W), periodic, with scores ``s`` at ``x``. A[p, p + e] = -(u_e(p) (x_{p+e}^2 -
    level) + u_e(p + e) (x_p^2 - level)) / 4: the ``level`` term's coefficient is blind to both
    pixels, so it leaves div A and exactness as they are and only sets where the stirring A s
    vanishes (at x^2 = level: a saturated channel, at the score's level a, for level = a)."""
    out = torch.zeros_like(x)
    for axis, k in AXES:
        uk = u[:, k : k + 1]
        ahead, behind = torch.roll(x, -1, axis), torch.roll(x, 1, axis)
        out = out - 0.5 * uk * (ahead - behind)  # div A: advection at u
        pair = -0.25 * (uk * (ahead.pow(2) - level) + torch.roll(uk, -1, axis) * (x.pow(2) - level))
        out = (
            out
            + pair * torch.roll(s, -1, axis)
            - torch.roll(pair, 1, axis) * torch.roll(s, 1, axis)
        )
    return out


def periodic_correlation(c: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """``c`` (B, 1, H, W) correlated with ``kernels`` (K, 1, S, S) on the periodic canvas."""
    reach = kernels.shape[-1] // 2
    height, width = c.shape[-2:]
    if min(height, width) <= 2 * reach + 1:
        raise ValueError(
            f"a {height} x {width} canvas is too small for the heading window of "
            f"{2 * reach + 1} pixels: it would wrap onto the pixels it must not see; use a "
            f"smaller flow.model.spread (< {min(height, width) / 5:.1f})"
        )
    return F.conv2d(F.pad(c, (reach,) * 4, mode="circular"), kernels.to(c))


def background_colour(x0: torch.Tensor) -> torch.Tensor:
    """The most frequent colour of images ``x0`` (N, C, H, W), to two decimals."""
    pixels = (x0.movedim(1, -1).reshape(-1, x0.shape[1]) * 100).round()
    colours, counts = torch.unique(pixels, dim=0, return_counts=True)
    return colours[counts.argmax()] / 100


def strongest_dipole_contrast(x0: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """The unit colour contrast w (C,) of images ``x0`` (N, C, H, W) whose windowed dipole is
    strongest per unit of its variance over pixels, orthogonal to the icons' mean colour
    against the background (a generalised eigenproblem in the C - 1 remaining directions)."""
    n, channels = x0.shape[:2]
    if channels < 2:
        raise ValueError(
            "flow=transport reads a colour contrast; it needs images of at least 2 channels"
        )
    x0 = x0.double()
    mean_colour = (x0 - background_colour(x0).view(1, -1, 1, 1)).mean(dim=(0, 2, 3))
    pixels = x0.movedim(1, -1).reshape(-1, channels)
    variance = torch.cov(pixels.T)
    dipoles = torch.stack(
        [periodic_correlation(x0[:, c : c + 1], kernels.double()) for c in range(channels)], -1
    )
    strength = torch.einsum("...i,...j->ij", dipoles, dipoles) / dipoles[..., 0].numel()
    basis = torch.linalg.svd(
        torch.eye(channels, dtype=x0.dtype)
        - torch.outer(mean_colour, mean_colour) / mean_colour.pow(2).sum().clamp_min(1e-30)
    )[0][:, : channels - 1]
    ridge = 1e-6 * variance.trace()
    lower = torch.linalg.cholesky(
        basis.T @ variance @ basis + ridge * torch.eye(channels - 1, dtype=x0.dtype)
    )
    inv = torch.linalg.inv(lower)
    _, vectors = torch.linalg.eigh(inv @ basis.T @ strength @ basis @ inv.T)
    w = basis @ inv.T @ vectors[:, -1]
    w = w / w.norm()
    return (w * torch.sign(w[w.abs().argmax()])).float()


class HeadingTransportFlow(FlowBase):
    """v = div A + A(x) s on images (B, C, H, W), A(x) the skew operator of local advection at
    a heading velocity u(x) read from the image (:func:`transport_field`): exact (div(p v) = 0
    for the score model's p) whatever u is, and rigid translation where u is uniform. Set up
    from the training images at build (:meth:`fit_to_data`); nothing to train."""

    trainable = False
    images = True

    def __init__(
        self, score, dim: int, top_speed: float = 2.0, spread: float = 8.0, spatial: bool = False
    ):
        super().__init__(score)
        if not spatial:
            raise ValueError(
                "flow=transport moves images (B, C, H, W); for vectors use flow=exact_lowrank "
                "or flow=training_free"
            )
        if top_speed <= 0 or spread <= 0:
            raise ValueError(
                f"flow.model.top_speed={top_speed} (pixels per unit time) and flow.model.spread="
                f"{spread} (pixels) must be numbers > 0"
            )
        self.save_hyperparameters(ignore=["score"])
        self.register_buffer("kernels", heading_kernels(spread))
        self.register_buffer("contrast", torch.zeros(dim))
        self.register_buffer("background", torch.zeros(dim))

    @torch.no_grad()
    def fit_to_data(self, x0: torch.Tensor) -> None:
        """Read the background colour and the contrast w from (up to 256 of) the training
        images ``x0`` (tiled where the window is wider than their canvas)."""
        x0 = x0[:SETUP_IMAGES].float().cpu()
        # a periodic image tiled is the same image: the window fits on a small training canvas
        tiles = (self.kernels.shape[-1] + 1) // min(x0.shape[-2:]) + 1
        x0 = x0.repeat(1, 1, tiles, tiles)
        self.background.copy_(background_colour(x0))
        self.contrast.copy_(strongest_dipole_contrast(x0, self.kernels[:2].cpu()))

    def heading(self, x: torch.Tensor) -> torch.Tensor:
        """u (B, 2, H, W) in pixels per unit time: ``top_speed`` times the contrast's dipole in
        the window of each pixel over its first absolute moment there (at most 1: all the
        contrast on one side), blind at the pixel and its neighbours. At the score's level a,
        the background's contrast is sqrt(a) w.b."""
        level = torch.sqrt(self.score_model.alpha).to(x)
        centred = x - level * self.background.to(x).view(1, -1, 1, 1)
        c = torch.einsum("bchw,c->bhw", centred, self.contrast.to(x))
        dipole = periodic_correlation(c[:, None], self.kernels[:2])
        spread = periodic_correlation(c.abs()[:, None], self.kernels[2:])
        return self.hparams.top_speed * dipole / (spread + SPREAD_FLOOR)

    def drift(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """div A + A s, with the stirring vanishing at saturated channels (x^2 = a)."""
        return transport_field(x, s, self.heading(x), float(self.score_model.alpha))

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        return self.drift(x, self.score(x))

    def training_step(self, batch, batch_idx):
        raise RuntimeError("flow=transport has nothing to train; it is measured directly")

    def configure_optimizers(self):
        return None
