"""Equilibrium flows that are exact by construction: v = div A + A s with a learned skew field A.

For a skew-symmetric matrix field A(x), ``p v = div(p A)`` row by row when s = grad log p, and
the divergence of the divergence of a skew field vanishes, so div(p v) = 0 exactly: the flow
preserves p whatever the network's weights. What remains of the continuity residual
div v + v . s is <A, antisym(ds)>, nonzero only through the score model's non-conservative
part (zero for a conservative score, ``score=energy``). A constant A is the training-free flow
v = D s.

Training only chooses among exact flows: A minimises the Jacobian strain E ||sym(dv)||_F^2 at
a fixed scale (the published loss's penalty; its residual term is zero here). The field is
normalised by one scalar per member, sqrt(d / E|v|^2) (a running mean over the batches,
recalibrated on many points when the fit ends): a per-coordinate normalisation would break the
construction.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence

import torch

from eqflow.dynamics.divergence import jacobian
from eqflow.errors import check_finite_loss
from eqflow.models.flow import FlowBase, check_scale_settings
from eqflow.models.optim import build_optimizer
from eqflow.models.score import Score
from eqflow.nets.jet import JetMLP

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def exact_field(net: JetMLP, x: torch.Tensor, s: torch.Tensor, ds: torch.Tensor | None = None):
    """``(v, dv)``: the raw field v = div A + A s of ``net`` at ``x`` (K, B, d) with scores ``s``
    (K, B, d), and, given the score Jacobians ``ds`` (K, B, d, d) ([j, l] = d s_j / d x_l), its
    Jacobian dv (K, B, d, d) ([i, l] = d v_i / d x_l; else None)."""
    value, jac, hess = net.jet(x, 1 if ds is None else 2)
    a = net.skew(value)  # A_ij
    da = net.skew(jac)  # [k, i, j] = d A_ij / d x_k
    v = torch.einsum("...jij->...i", da) + torch.einsum("...ij,...j->...i", a, s)
    if ds is None:
        return v, None
    dda = net.skew(hess)  # [k, l, i, j] = d2 A_ij / d x_k d x_l
    dv = (
        torch.einsum("...jlij->...il", dda)
        + torch.einsum("...lij,...j->...il", da, s)
        + torch.einsum("...ij,...jl->...il", a, ds)
    )
    return v, dv


def strain_loss(
    net: JetMLP, x: torch.Tensor, s: torch.Tensor, ds: torch.Tensor, scale_penalty: float
) -> dict[str, torch.Tensor]:
    """Per member (K,): ``loss`` = d E||sym dv||^2 / E|v|^2 + scale_penalty log(E|v|^2 / d)^2
    (scale-free strain, plus a weak pull keeping the raw scale near 1), and its parts."""
    d = x.shape[-1]
    v, dv = exact_field(net, x, s, ds)
    sym = 0.5 * (dv + dv.transpose(-1, -2))
    strain = sym.pow(2).sum((-1, -2)).mean(-1)
    mean_sq = v.pow(2).sum(-1).mean(-1)
    loss = d * strain / mean_sq + scale_penalty * torch.log(mean_sq / d) ** 2
    return {"loss": loss, "strain": d * strain / mean_sq, "mean_sq": mean_sq}


def score_and_jacobian(score: Score, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The score at ``x`` (..., d) and its Jacobian (..., d, d) (d forward-mode products)."""
    flat = x.reshape(-1, x.shape[-1])
    with torch.no_grad():
        s, ds = jacobian(score.score, flat)
    return s.reshape(x.shape), ds.reshape(*x.shape, x.shape[-1])


def stacked_exact_field(flows: Sequence["ExactFlowModule"], dtype=torch.float64):
    """One field (K, N, d) -> (K, N, d) for K one-member exact flows of one architecture and one
    score model (row k moves by flow k), in ``dtype``; None where they do not stack."""
    if len(flows) < 2 or not all(type(f) is ExactFlowModule for f in flows):
        return None
    layouts = {tuple((k, tuple(v.shape)) for k, v in f.net.state_dict().items()) for f in flows}
    if len(layouts) > 1 or len({f.net.activation for f in flows}) > 1:
        return None
    first = flows[0].score_model.state_dict()
    for f in flows[1:]:
        if f.score_model is not flows[0].score_model and any(
            not torch.equal(v, first[k]) for k, v in f.score_model.state_dict().items()
        ):
            return None
    net = JetMLP.stack([f.net for f in flows]).to(dtype).eval()
    score = copy.deepcopy(flows[0].score_model).to(dtype).eval()
    dim = flows[0].hparams.dim
    scale = torch.sqrt(dim / torch.cat([f.running_sq for f in flows]).to(dtype))[:, None, None]

    def field(x: torch.Tensor) -> torch.Tensor:
        s = score.score(x.reshape(-1, dim)).reshape(x.shape)
        return exact_field(net, x, s)[0] * scale.to(x.device)

    return field


class ExactFlowModule(FlowBase):
    """v = c (div A + A s): A(x) skew-symmetric from an MLP on a positional encoding (its
    d(d-1)/2 outputs fill the upper triangle), c = sqrt(d / E|v|^2) one scalar. Trained on the
    scale-free Jacobian strain; every member of it preserves the score model's density."""

    LOGGED = {"strain": "train/strain", "mean_sq": "train/raw_mean_sq_speed"}

    def __init__(
        self,
        score: Score,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        n_freqs: int = 4,
        lr: float = 3e-3,
        weight_decay: float = 0.0,
        lr_schedule: str = "cosine",
        scale_penalty: float = 1e-2,
        norm_momentum: float = 0.1,
        calibration_points: int = 16_384,
        compile: bool = False,
    ):
        super().__init__(score)
        if dim < 2:
            raise ValueError(f"an exact flow needs dimension >= 2 (a skew matrix field), got {dim}")
        check_scale_settings(scale_penalty, norm_momentum)
        self.save_hyperparameters(ignore=["score"])
        self.net = JetMLP(dim, dim * (dim - 1) // 2, hidden, activation, n_freqs, members=1)
        self.register_buffer("running_sq", torch.ones(1))

    @property
    def n_members(self) -> int:
        return self.net.members

    def scale(self) -> torch.Tensor:
        """c per member (K, 1, 1): the raw field times c has E|v|^2 = d."""
        return torch.sqrt(self.hparams.dim / self.running_sq)[:, None, None]

    def raw_field(self, x: torch.Tensor) -> torch.Tensor:
        """div A + A s at ``x`` (K, B, d), before the scale."""
        s = self.score(x.reshape(-1, x.shape[-1])).reshape(x.shape)
        return exact_field(self.net, x, s)[0]

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        """The field at ``x``: (B, d) -> (B, d) for one flow, (K, B, d) for an ensemble of K;
        (K, B, d) in gives each member its own rows."""
        rows = x.ndim == 2
        xs = x.expand(self.n_members, *x.shape) if rows else x
        v = self.raw_field(xs) * self.scale().to(x)
        return v[0] if rows and self.n_members == 1 else v

    def noised(self, x0: torch.Tensor) -> torch.Tensor:
        """A training batch's noised points, (K, B, d)."""
        return self.score_model.noise(x0)[None]

    def loss_parts(self, x0: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step's loss per member (``loss``: (K,)) and its parts."""
        x = self.noised(x0)
        s, ds = score_and_jacobian(self.score_model, x)
        if self.hparams.compile:
            if self not in _COMPILED:  # kept outside the module: copies of it compile anew
                _COMPILED[self] = torch.compile(strain_loss)
            parts = _COMPILED[self](self.net, x, s, ds, self.hparams.scale_penalty)
        else:
            parts = strain_loss(self.net, x, s, ds, self.hparams.scale_penalty)
        if self.training:
            with torch.no_grad():
                self.running_sq.lerp_(parts["mean_sq"].detach(), self.hparams.norm_momentum)
        return parts

    def training_step(self, x0: torch.Tensor, batch_idx: int) -> torch.Tensor:
        parts = self.loss_parts(x0)
        loss = parts["loss"].sum()
        check_finite_loss(loss, "flow", self.global_step)
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        self.log_parts(parts)
        return loss

    def on_train_end(self) -> None:
        self.calibrate(self.trainer.datamodule.x)

    def calibration_points(self, x0: torch.Tensor) -> torch.Tensor:
        """Noised points for the scale, (K, n, d), from the global generator."""
        n = min(len(x0), self.hparams.calibration_points)
        idx = torch.randperm(len(x0))[:n]
        return self.score_model.noise(x0[idx].to(self.device))[None]

    @torch.no_grad()
    def calibrate(self, x0: torch.Tensor) -> None:
        """Set the scale from many noised points (more exact than the running mean)."""
        x = self.calibration_points(x0).to(self.device)
        sums = sum(self.raw_field(chunk).pow(2).sum(-1).sum(-1) for chunk in x.split(4096, dim=1))
        self.running_sq.copy_(sums / x.shape[1])

    def configure_optimizers(self):
        hp = self.hparams
        return build_optimizer(self, hp.lr, hp.weight_decay, hp.lr_schedule)
