"""``flow=glide``: every creature on an image glides along its own heading, a drift built from the
data's symmetry rather than from the score (docs/alife.md, "Creatures that travel")."""

from __future__ import annotations

import torch

from eqflow.dynamics.heading import (
    background_colour,
    capped,
    contrast,
    heading_channels,
    heading_field,
    moment_kernels,
)
from eqflow.dynamics.skew import circular_conv
from eqflow.dynamics.transport import CENTRAL_WEIGHTS, central_advection
from eqflow.models.flow import FlowBase
from eqflow.models.score import tweedie

CALIBRATION_IMAGES = 64
# the floor of a window's |contrast|, as a share of its 90th percentile on the data
FLOOR_SHARE = 0.1
# contrasts below this share of the data's 90th percentile |contrast| read as background
DEAD_ZONE_SHARE = 0.15


class GlideFlow(FlowBase):
    """v = -u . grad x: advection of the image by central differences (of ``order`` 2 or 4) at a
    velocity field u of ``speed`` pixels per unit time along each creature's heading, read from
    the clean image the score model sees at x (Tweedie's x0_hat;
    :mod:`eqflow.dynamics.heading`: the polarity of one colour contrast within a Gaussian window
    of width ``window_sigma``, so that a whole body reads one heading). A creature whose heading
    is at least ``full_speed_share`` of a whole one's glides at full speed; weaker headings (a
    creature half formed) glide slower.

    Why it keeps the scatters' distribution: creatures placed at independent uniform positions
    make a density that moving any one creature rigidly leaves as it is, so carrying each along
    its own heading keeps it, up to contacts between creatures and to how far u varies over a
    body. It is not exact for the score model's density as D s is: it reads the score only to
    see the creatures, and the SDE's Langevin term eta s is what holds their shapes. Exact
    constructions cannot carry creatures (docs/exact_flows.md, "What carries a creature");
    this one is for motion.
    """

    trainable = False
    images = True

    def __init__(
        self,
        score,
        dim: int,
        speed: float = 0.5,
        window_sigma: float = 4.0,
        full_speed_share: float = 0.5,
        order: int = 4,
        spatial: bool = False,
    ):
        super().__init__(score)
        if not spatial:
            raise ValueError(
                "flow=glide moves creatures on images; the data are vectors. Use flow=exact or "
                "flow=training_free"
            )
        for name, value in (
            ("speed", speed),
            ("window_sigma", window_sigma),
            ("full_speed_share", full_speed_share),
        ):
            if not value > 0:
                raise ValueError(f"flow.model.{name}={value}: a number > 0")
        if order not in CENTRAL_WEIGHTS:
            raise ValueError(
                f"flow.model.order={order}: the central differences' order of accuracy, one of "
                f"{list(CENTRAL_WEIGHTS)}"
            )
        self.save_hyperparameters(ignore=["score"])
        self.register_buffer("kernels", moment_kernels(window_sigma))
        self.register_buffer("channels", torch.zeros(dim))
        # the background's contrast, the dead zone of |contrast|, the floor of a window's
        # |contrast|, a whole creature's heading length
        self.register_buffer("levels", torch.zeros(4))

    def calibrate(self, x0: torch.Tensor) -> None:
        """From clean images ``x0`` (N, C, H, W) in [-1, 1] (the first CALIBRATION_IMAGES): the
        heading's colour channels; the background's contrast; the dead zone of |contrast|; the
        floor of a window's |contrast|; a whole creature's heading length (levels, in order)."""
        x = x0[:CALIBRATION_IMAGES].float().cpu()
        w = heading_channels(x, self.hparams.window_sigma)
        rest = float(w @ background_colour(x))
        x = x.to(self.kernels.device)
        self.channels.copy_(w)
        raw = contrast(x, self.channels, rest, 0.0)
        dead_zone = DEAD_ZONE_SHARE * float(raw.abs().flatten().quantile(0.9))
        f = torch.nn.functional.softshrink(raw, dead_zone)
        mass = circular_conv(f.abs(), self.kernels[:1])
        typical = float(mass.flatten().quantile(0.9))
        floor = FLOOR_SHARE * typical
        h = heading_field(f, self.kernels, floor).norm(dim=1, keepdim=True)
        whole = float(h[mass > typical / 2].median())
        self.levels.copy_(torch.tensor([rest, dead_zone, floor, whole]))

    def glide_velocity(self, x0: torch.Tensor) -> torch.Tensor:
        """(B, 2, H, W): the velocity field u, pixels per unit time, of clean images ``x0``."""
        if not self.levels[3] > 0:
            raise RuntimeError("flow=glide is not calibrated: call calibrate(data) first")
        rest, dead_zone, floor, whole = self.levels.tolist()
        h = heading_field(contrast(x0, self.channels, rest, dead_zone), self.kernels, floor)
        return self.hparams.speed * capped(h, whole * self.hparams.full_speed_share)

    def drift(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Advection of ``x`` at the velocity of the clean image the score sees there
        (Tweedie's x0_hat = (x + (1 - a) s) / sqrt(a)): the heading of the model's creatures,
        not of the noise."""
        u = self.glide_velocity(tweedie(x, s, self.alpha))
        return central_advection(x, u, self.hparams.order)

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        return self.drift(x, self.score(x))

    def training_step(self, batch, batch_idx):
        raise RuntimeError("flow=glide has nothing to train; it is measured directly")

    def configure_optimizers(self):
        return None
