"""Exact equilibrium flows at any dimension: v = div A + A s with a low-rank skew field
A = sum_k (u_k w_k^T - w_k u_k^T), u_k and w_k hollow (output i blind to input i).

For such an A, (div A) = sum_k (J_{u_k} w_k - J_{w_k} u_k + u_k div w_k - w_k div u_k), and a
hollow field has zero divergence, so

    v = sum_k [ J_{u_k} w_k - J_{w_k} u_k + u_k (w_k . s) - w_k (u_k . s) ]

exactly: two Jacobian-vector products a term (forward mode, in the network's own pass) and no
matrix. As for every v = div A + A s with a skew A, div(p v) = 0 for s = grad log p whatever
the weights (:mod:`eqflow.models.exact`). A step costs O(K B d H^2), about linear in d, where
the jet flow's costs ~d^4.

Training picks, among these exact flows, the one of least Jacobian strain E||sym dv||_F^2 at a
fixed scale, estimated without any d x d matrix from two Jacobian-vector products a probe pair
(forward mode only; :func:`hutchinson_strain`). The estimate is unbiased; the exactness does
not depend on it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.autograd.forward_ad as fwAD

from eqflow.models.flow import FlowBase, check_scale_settings
from eqflow.models.optim import build_optimizer
from eqflow.models.score import Score
from eqflow.nets.hollow import HollowNet


def lowrank_exact_field(net: HollowNet, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """The raw field sum_k [J_u_k w_k - J_w_k u_k + u_k (w_k.s) - w_k (u_k.s)] of ``net`` (2K
    channels: u_1..u_K, w_1..w_K) at ``x`` (B, d) with scores ``s`` (B, d)."""
    k = net.channels // 2
    out = net(x)
    u, w = out[..., :k], out[..., k:]
    directions = torch.cat([w, u], dim=-1).permute(2, 0, 1)  # (2K, B, d): w_k, then u_k
    # channel u_k along w_k, channel w_k along u_k: (2K, B, d)
    _, along = net.with_tangents(x, directions, channels=list(range(2 * k)))
    ju_w = along[:k].permute(1, 2, 0)  # (B, d, K): J_{u_k} w_k
    jw_u = along[k:].permute(1, 2, 0)  # J_{w_k} u_k
    w_dot_s = torch.einsum("bik,bi->bk", w, s)[:, None]
    u_dot_s = torch.einsum("bik,bi->bk", u, s)[:, None]
    return (ju_w - jw_u + u * w_dot_s - w * u_dot_s).sum(-1)


def _jvp(field, x: torch.Tensor, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(v, dv direction)`` at ``x`` by forward mode (differentiable in the parameters)."""
    with fwAD.dual_level():
        out = fwAD.unpack_dual(field(fwAD.make_dual(x, direction)))
    return out.primal, out.tangent


def hutchinson_strain(field, x: torch.Tensor, n_probes: int, generator=None) -> tuple:
    """``(v, strain)``: the field at ``x`` (B, d) and, per point (B,), an unbiased estimate of
    ||sym(dv)||_F^2 = (||dv||_F^2 + tr(dv dv)) / 2 from ``n_probes`` pairs of Gaussian probes
    r, q: with a = dv r and b = dv q (forward mode only, no reverse pass through the field),
    E(|a|^2 + |b|^2) / 2 = ||dv||_F^2 and E (q . a)(r . b) = tr(dv dv)."""
    x = x.detach()
    estimates, v = [], None
    for _ in range(n_probes):
        r, q = (
            torch.randn(x.shape, generator=generator, dtype=x.dtype, device="cpu").to(x.device)
            for _ in range(2)
        )
        v, a = _jvp(field, x, r)
        _, b = _jvp(field, x, q)
        estimates.append(pair_strain(r, q, a, b))
    return v, torch.stack(estimates).mean(0)


def pair_strain(r, q, a, b) -> torch.Tensor:
    """One unbiased estimate per point (the first axis) of ||sym(dv)||_F^2 from the Gaussian
    probes ``r``, ``q`` and ``a = dv r``, ``b = dv q`` (any shape after the first axis)."""
    r, q, a, b = (t.flatten(1) for t in (r, q, a, b))
    frobenius = 0.5 * (a.pow(2).sum(-1) + b.pow(2).sum(-1))
    trace = (q * a).sum(-1) * (r * b).sum(-1)
    return 0.5 * (frobenius + trace)


class StrainTrainedFlow(FlowBase):
    """What flows trained on the scale-free strain share: a running mean ``running_sq`` of the
    raw field's squared speed that sets the scale, updated from each training batch, and the
    optimiser. Subclasses define ``strain(x)`` (the loss parts at noised points ``x``, with
    ``mean_sq``) and the hyper-parameters lr, weight_decay, lr_schedule, norm_momentum and
    calibration_points."""

    def loss_parts(self, x0: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = self.strain(self.score_model.noise(x0))
        if self.training:
            with torch.no_grad():
                self.running_sq.lerp_(parts["mean_sq"].detach()[None], self.hparams.norm_momentum)
        return parts

    def calibration_sample(self, x0: torch.Tensor) -> torch.Tensor:
        """Up to ``calibration_points`` of ``x0``, drawn at random and noised."""
        n = min(len(x0), self.hparams.calibration_points)
        return self.score_model.noise(x0[torch.randperm(len(x0))[:n]].to(self.device))

    def configure_optimizers(self):
        hp = self.hparams
        return build_optimizer(self, hp.lr, hp.weight_decay, hp.lr_schedule)


class LowRankExactFlow(StrainTrainedFlow):
    """v = c (div A + A s) with A = sum_k (u_k w_k^T - w_k u_k^T) of rank ``2 * rank``, u and w
    from one hollow network; c = sqrt(d / E|v|^2) one scalar. Exact for any weights; trained on
    the scale-free Jacobian strain by Hutchinson probes. Cost about linear in d."""

    LOGGED = {"strain": "train/strain", "mean_sq": "train/raw_mean_sq_speed"}

    def __init__(
        self,
        score: Score,
        dim: int,
        rank: int = 4,
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        n_probes: int = 1,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "cosine",
        scale_penalty: float = 1e-2,
        norm_momentum: float = 0.1,
        calibration_points: int = 16_384,
    ):
        super().__init__(score)
        check_scale_settings(scale_penalty, norm_momentum)
        if dim < 2:
            raise ValueError(f"an exact flow needs dimension >= 2 (a skew matrix field), got {dim}")
        self.save_hyperparameters(ignore=["score"])
        self.net = HollowNet(dim, 2 * rank, hidden, activation)
        self.register_buffer("running_sq", torch.ones(1))

    def scale(self) -> torch.Tensor:
        return torch.sqrt(self.hparams.dim / self.running_sq)

    def raw_field(self, x: torch.Tensor) -> torch.Tensor:
        """div A + A s at ``x`` (B, d), before the scale."""
        return lowrank_exact_field(self.net, x, self.score(x))

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        """The field at ``x``: (B, d) -> (B, d); (K, B, d) row blocks map to (K, B, d)."""
        flat = x.reshape(-1, x.shape[-1])
        return (self.raw_field(flat) * self.scale().to(x)).reshape(x.shape)

    def strain_parts(self, net: HollowNet, x: torch.Tensor, generator=None) -> dict:
        """``loss`` = d E||sym dv||^2 / E|v|^2 + scale_penalty log(E|v|^2 / d)^2 of the raw
        field of ``net`` at noised points ``x`` (B, d), and its parts (scalars); the probes
        from ``generator`` (None: the global one)."""
        d = x.shape[-1]

        def field(y):
            return lowrank_exact_field(net, y, self.score(y))

        v, strain = hutchinson_strain(field, x, self.hparams.n_probes, generator)
        mean_sq = v.pow(2).sum(-1).mean()
        strain = d * strain.mean() / mean_sq
        loss = strain + self.hparams.scale_penalty * torch.log(mean_sq / d) ** 2
        return {"loss": loss, "strain": strain, "mean_sq": mean_sq}

    def strain(self, x: torch.Tensor) -> dict:
        return self.strain_parts(self.net, x)

    @torch.no_grad()
    def calibrate(self, x0: torch.Tensor) -> None:
        """Set the scale from many noised points (more exact than the running mean)."""
        x = self.calibration_sample(x0)
        total = sum(self.raw_field(chunk).pow(2).sum() for chunk in x.split(4096))
        self.running_sq.copy_((total / len(x))[None])
