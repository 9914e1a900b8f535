"""Exact equilibrium flows on images: v = c A(x) s with a learned local skew operator A(x).

A couples channel i of pixel p with channel j of pixel p + delta for the offsets delta of a small
stencil (and the channels of one pixel with each other) through coefficients c_delta(p)
(:class:`eqflow.nets.blind_pairs.BlindPairNet`), antisymmetrically:

    A[(p, i), (p + delta, j)] = c_delta^{ij}(p) = -A[(p + delta, j), (p, i)].

The coefficient of a pair does not depend on the pair's own pixels (a convolution masked at
both), so every column of A is free of its own coordinate: (div A)_k = sum_l dA_kl / dx_l = 0,
and v = div A + A s = A s. For s = grad log p, div(p v) = p tr(A H) = 0 (A skew, H the
symmetric Hessian of log p) for any weights: the flow preserves the score model's density
exactly, whatever training does.

Training picks the field of least Jacobian strain E||sym dv||_F^2 at a fixed scale, estimated
from probe pairs (:func:`eqflow.models.exact_lowrank.pair_strain`). The score's Jacobian along a
probe is computed once per step without a graph (the score model is fixed), so the U-Net's
weights stay out of the flow's backward pass. One reason to expect more than a random D: the
Jacobian of advection (a central difference on a periodic grid) is skew, so least strain
favours moving a pattern rigidly over deforming it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.autograd.forward_ad as fwAD

from eqflow.models.exact_lowrank import StrainTrainedFlow, pair_strain
from eqflow.models.flow import check_scale_settings
from eqflow.models.score import Score
from eqflow.nets.blind_pairs import BlindPairNet


def local_skew_apply(
    coef: torch.Tensor, s: torch.Tensor, offsets: Sequence[tuple[int, int]]
) -> torch.Tensor:
    """A s for the local skew operator of coefficients ``coef`` (B, K, C, C, H, W) (offset 0
    first: its C x C matrices are made skew) applied to ``s`` (B, C, H, W), periodic."""
    own = coef[:, 0] - coef[:, 0].transpose(1, 2)
    out = torch.einsum("bijhw,bjhw->bihw", own, s)
    for k, (dy, dx) in enumerate(offsets[1:], 1):
        c = coef[:, k]
        out = out + torch.einsum("bijhw,bjhw->bihw", c, torch.roll(s, (-dy, -dx), (-2, -1)))
        behind = torch.roll(s, (dy, dx), (-2, -1))
        out = out - torch.einsum("bijhw,bihw->bjhw", torch.roll(c, (dy, dx), (-2, -1)), behind)
    return out


def score_jacobian_products(
    score, x: torch.Tensor, directions: Sequence[torch.Tensor], differentiable: bool = False
) -> tuple:
    """``(s(x), [J_s d for d in directions])``: the score's Jacobian along each direction by
    reverse mode twice (J d = d/du <J^T u, d>), which any network supports. The score is
    detached; the products are too unless ``differentiable`` (then they keep their graph to
    the directions, for a loss through them)."""
    n = len(directions)
    with torch.enable_grad():
        xs = x.detach().repeat(n, *([1] * (x.ndim - 1))).requires_grad_(True)
        s = score(xs)
        u = torch.zeros_like(s, requires_grad=True)
        (transposed,) = torch.autograd.grad(s, xs, u, create_graph=True)
        directions = torch.cat(list(directions))
        (along,) = torch.autograd.grad(transposed, u, directions, create_graph=differentiable)
    along = along if differentiable else along.detach()
    return s[: len(x)].detach(), list(along.chunk(n))


def probe_pair_strain(raw_field, score, x, r, q, shift: float = 0.0) -> tuple:
    """``(s, v, estimate)``: the score and the raw field at ``x`` and one unbiased estimate per
    image of ||sym dv||_F^2 from the probe pair ``r``, ``q`` (:func:`pair_strain`).

    The estimate reads the Jacobian dv + c A with c = ``shift``: A is skew, so the added
    term leaves sym dv, and the estimate's mean, unchanged. For a score at noise level 1 - a,
    J_s = -I / (1 - a) + (a / (1 - a)^2) Cov[x0 | x], and c = 1 / (1 - a) removes the skew part
    -A / (1 - a) that would otherwise dominate |dv| and the probes' variance."""
    s, (jr, jq) = score_jacobian_products(score, x, (r, q))
    v, a = field_jvp(raw_field, x, s, r, jr + shift * r)
    _, b = field_jvp(raw_field, x, s, q, jq + shift * q)
    return s, v, pair_strain(r, q, a, b)


def content_motion(score, x: torch.Tensor, v: torch.Tensor, alpha: float) -> torch.Tensor:
    """How fast the clean content the score sees in ``x`` moves along ``v``: the derivative of
    Tweedie's x0_hat = (x + (1 - a) s(x)) / sqrt(a), (v + (1 - a) J_s v) / sqrt(a), by reverse
    mode twice and differentiable in ``v``. Near zero where v only stirs the noise."""
    _, (along,) = score_jacobian_products(score, x, (v,), differentiable=True)
    return (v + (1.0 - alpha) * along) / alpha**0.5


def field_jvp(raw_field, x, s, dx, ds) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A(x) s, dv)`` with dv = A(x) ds + (d_x A dx) s: the field's derivative along ``dx``
    when ``ds`` is the score's (forward mode, differentiable in the flow's weights)."""
    with fwAD.dual_level():
        out = fwAD.unpack_dual(raw_field(fwAD.make_dual(x, dx), fwAD.make_dual(s, ds)))
    return out.primal, out.tangent


STRAIN_PER = ("field", "content")


class LocalExactFlow(StrainTrainedFlow):
    """v = c A(x) s on images (B, C, H, W): A(x) a learned local skew operator whose
    coefficient for a pixel pair is blind to both pixels (exact: div(p v) = 0 for any weights),
    c one scalar (rms |v| = ``speed`` rms |s|). Trained on the scale-free Jacobian strain, per
    unit of |v| or of the clean content's motion (``strain_per``)."""

    LOGGED = {
        "strain": "train/strain",
        "mean_sq": "train/raw_mean_sq_speed",
        "content_share": "train/content_share",
    }
    images = True

    def __init__(
        self,
        score: Score,
        dim: int,
        reach: int = 1,
        radius: int = 2,
        hidden: Sequence[int] = (32,),
        n_probes: int = 1,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "cosine",
        scale_penalty: float = 1e-2,
        norm_momentum: float = 0.1,
        calibration_points: int = 256,
        speed: float = 0.5,
        skew_shift: bool = True,
        strain_per: str = "field",
        spatial: bool = True,
    ):
        super().__init__(score)
        check_scale_settings(scale_penalty, norm_momentum)
        if speed <= 0:
            raise ValueError(f"flow.model.speed={speed}: the rms |v| / rms |s|, a number > 0")
        if strain_per not in STRAIN_PER:
            raise ValueError(
                f"flow.model.strain_per={strain_per!r}: choose one of {STRAIN_PER} (the strain "
                f"per unit of the field's speed, or of the motion of the clean content)"
            )
        if not spatial:
            raise ValueError(
                "flow=exact_local acts on images (B, C, H, W); for vectors use "
                "flow=exact_lowrank or flow=exact"
            )
        self.save_hyperparameters(ignore=["score"])
        score.allow_second_derivatives()
        self.net = BlindPairNet(dim, reach, radius, hidden)
        self.register_buffer("running_sq", torch.ones(1))

    def scale(self) -> torch.Tensor:
        """c: rms |v| is ``speed`` times rms |s| on noised data (a random skew D of unit norm
        on C = 3 channels gives about 0.58)."""
        return self.hparams.speed / torch.sqrt(self.running_sq)

    def raw_field(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """A(x) s, before the scale."""
        return local_skew_apply(self.net(x), s, self.net.offsets)

    def drift(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.raw_field(x, s) * self.scale().to(x)

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        return self.drift(x, self.score(x))

    def strain(self, x: torch.Tensor, generator=None) -> dict:
        """``loss`` = d E||sym dv||^2 / E|m|^2 + scale_penalty log(E|v|^2 / E|s|^2)^2 at noised
        images ``x``, and its parts (``mean_sq``: E|v|^2 / E|s|^2), with m = v (``strain_per``
        field) or the clean content's motion (content: :func:`content_motion`); dv r =
        A (J_s r) + (d_x A r) s by forward mode through the coefficient network, the score's
        Jacobian products as the tangents of s (shifted by 1 / (1 - a) where ``skew_shift``:
        :func:`probe_pair_strain`)."""
        shift = 1.0 / (1.0 - float(self.alpha)) if self.hparams.skew_shift else 0.0
        estimates, v = [], None
        for _ in range(self.hparams.n_probes):
            r, q = (
                torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
                for _ in range(2)
            )
            s, v, estimate = probe_pair_strain(self.raw_field, self.score, x, r, q, shift)
            estimates.append(estimate)
        moved = v
        if self.hparams.strain_per == "content":
            moved = content_motion(self.score, x, v, float(self.alpha))
        per_pixel_sq = moved.pow(2).flatten(1).mean(-1).mean()  # E|v|^2 / d (or the content's)
        strain = torch.stack(estimates).mean() / per_pixel_sq
        ratio = v.pow(2).sum() / s.pow(2).sum()
        loss = strain + self.hparams.scale_penalty * torch.log(ratio) ** 2
        parts = {"loss": loss, "strain": strain, "mean_sq": ratio}
        if moved is not v:  # E|m|^2 / E|v|^2: how much of the field moves the content
            parts["content_share"] = (moved.pow(2).sum() / v.pow(2).sum()).detach()
        return parts

    @torch.no_grad()
    def calibrate(self, x0: torch.Tensor) -> None:
        """Set the scale from many noised images: E|A s|^2 / E|s|^2."""
        speed_sq, score_sq = 0.0, 0.0
        for chunk in self.calibration_sample(x0).split(32):
            s = self.score(chunk)
            speed_sq += self.raw_field(chunk, s).pow(2).sum()
            score_sq += s.pow(2).sum()
        self.running_sq.copy_((speed_sq / score_sq)[None])
