"""The learned equilibrium flow (a field trained on the continuity-equation loss) and the base
every flow shares: a frozen score model and ``velocity(x)``."""

from __future__ import annotations

import copy
import weakref
from collections.abc import Sequence

import pytorch_lightning as pl
import torch

from eqflow.dynamics.divergence import (
    METHODS,
    PROBES,
    divergence_estimates,
    hutchinson_variance,
    jacobian,
    probe_vectors,
    trace,
)
from eqflow.errors import check_finite_loss
from eqflow.models.optim import build_optimizer
from eqflow.models.score import Score
from eqflow.nets import FlowMLP
from eqflow.settings import Rule, check_setting

# How the Hutchinson residual enters the loss:
# squared  (published) (mean of K estimates + v.s)^2, whose mean over probes is the exact
#          residual^2 plus Var/K, a penalty on the Jacobian's symmetric part;
# product  two independent halves multiplied: unbiased for the exact residual^2, no penalty;
# expected the squared loss averaged over the probes in closed form from the full Jacobian
#          (d JVPs instead of K): the same objective without the probe noise.
ESTIMATORS = ("squared", "product", "expected")
# the rules of settings several flows share (checked at start-up and by each constructor)
NORM_MOMENTUM = Rule(float, gt=0, le=1)  # flow.model.norm_momentum: a running average's step
SCALE_PENALTY = Rule(float, ge=0)  # flow.model.scale_penalty


def check_scale_settings(scale_penalty: float, norm_momentum: float) -> None:
    """The settings of a flow whose speed is set by a running scale (the exact flows)."""
    check_setting("flow.model.scale_penalty", scale_penalty, SCALE_PENALTY)
    check_setting("flow.model.norm_momentum", norm_momentum, NORM_MOMENTUM)


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class FlowBase(pl.LightningModule):
    """Common parts: a frozen score model and its noise level.

    Every flow defines ``velocity(x)``: its vector field at ``x`` (B, d), whatever its mode.
    """

    trainable = True

    def __init__(self, score: Score):
        super().__init__()
        self.score_model = score
        self.score_model.requires_grad_(False)
        self.score_model.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.score_model.eval()  # the score model is fixed
        return self

    @property
    def alpha(self) -> torch.Tensor:
        return self.score_model.alpha

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.score_model.score(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.velocity(x)

    # whether the flow acts on images (B, C, H, W) as well as on vectors
    images = False

    def drift(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The field at ``x`` where the score ``s = s(x)`` is already known (an SDE that has
        just evaluated it); flows whose field is built from the score use ``s``."""
        return self.velocity(x)

    def calibrate(self, x0: torch.Tensor) -> None:
        """Fix data-dependent statistics from clean samples ``x0`` (no-op for most flows)."""

    # a training step's loss parts that are logged: {part: logger key}
    LOGGED: dict[str, str] = {}

    def training_step(self, x0: torch.Tensor, batch_idx: int) -> torch.Tensor:
        """One step of a single flow: ``loss_parts(x0)["loss"]``, checked finite and logged."""
        parts = self.loss_parts(x0)
        check_finite_loss(parts["loss"], "flow", self.global_step)
        self.log("train/loss", parts["loss"], on_step=False, on_epoch=True, prog_bar=True)
        self.log_parts(parts)
        return parts["loss"]

    def on_train_end(self) -> None:
        self.calibrate(self.trainer.datamodule.x)

    def log_parts(self, parts: dict[str, torch.Tensor]) -> None:
        """Log the epoch mean of every part of ``parts`` that ``LOGGED`` names."""
        for key, name in self.LOGGED.items():
            if key in parts:
                self.log(name, parts[key].float().mean(), on_step=False, on_epoch=True)


class EquilibriumFlowModule(FlowBase):
    """Learn v with div(p_t v) = 0 by minimising E[(div v + v . s)^2] on noised points.

    With the published Hutchinson loss the residual carries a Jacobian penalty (see ESTIMATORS):
    it makes the learned field unique across seeds but leaves a residual large enough for
    attracting points, which no p-preserving flow has. ``relax_epochs`` > 0 adds a relaxation
    stage: the fit's last ``relax_epochs`` epochs minimise the residual from the full Jacobian
    with the penalty scaled by ``relax_penalty`` (0: the exact residual), at learning rate
    ``relax_lr`` (null: unchanged). It starts from the unique field and moves it towards an
    equilibrium flow.

    The exact residual vanishes on a whole space of fields (every equilibrium flow of p), so the
    stage alone lets each seed drift to its own member of it. ``relax_anchor`` = mu > 0 adds
    mu |v - v_0|^2, v_0 the field as the stage begins (frozen in ``anchor``, checkpointed).
    The residual is linear in v (L v = div v + v.s), so in function space the objective
    E[(L v)^2] + mu E|v - v_0|^2 has one minimiser, (L*L + mu)^-1 mu v_0: a map of norm <= 1, so
    two seeds' relaxed fields lie no further apart than their v_0 (in the p-weighted L2 norm).
    As mu -> 0 it tends to the equilibrium flow nearest v_0.
    """

    LOGGED = {
        "div": "train/abs_div",
        "v_dot_s": "train/abs_v_dot_s",
        "anchor": "train/anchor_distance",
    }

    def __init__(
        self,
        score: Score,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        n_freqs: int = 4,
        lr: float = 1e-2,
        weight_decay: float = 1e-5,
        lr_schedule: str = "cosine",
        divergence: str = "exact",
        n_probes: int = 10,
        probe: str = "gaussian",
        estimator: str = "squared",
        norm_momentum: float = 0.1,
        calibration_points: int = 16_384,
        relax_epochs: int = 0,
        relax_penalty: float = 0.0,
        relax_lr: float | None = None,
        relax_anchor: float = 0.0,
        compile: bool = False,
    ):
        super().__init__(score)
        _check_loss_settings(divergence, probe, estimator, n_probes)
        _check_relaxation(relax_epochs, relax_penalty, relax_lr, relax_anchor, lr_schedule)
        self.save_hyperparameters(ignore=["score"])
        check_setting("flow.model.norm_momentum", norm_momentum, NORM_MOMENTUM)
        self.net = FlowMLP(dim, hidden, activation, n_freqs, norm_momentum)
        if relax_anchor > 0:  # the field as the relaxation begins; set by start_relaxation
            self.anchor = copy.deepcopy(self.net).requires_grad_(False)
            self.register_buffer("anchor_set", torch.tensor(False))

    @property
    def relaxing(self) -> bool:
        """True in the fit's last ``relax_epochs`` epochs (the relaxation stage)."""
        hp = self.hparams
        if not hp.relax_epochs or self._trainer is None:
            return False
        return self.current_epoch >= self.trainer.max_epochs - hp.relax_epochs

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.with_running_stats(x)

    @torch.no_grad()
    def start_relaxation(self) -> None:
        """Freeze the current field as the anchor (once: a resumed stage keeps its anchor)."""
        if self.hparams.relax_anchor > 0 and not bool(self.anchor_set):
            self.anchor.load_state_dict(self.net.state_dict())
            self.anchor_set.fill_(True)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint from before the stage (or from a run without an anchor) has no anchor
        weights: fill them with its own field's, unset, so the stage takes its snapshot."""
        state = checkpoint["state_dict"]
        if self.hparams.relax_anchor > 0 and "anchor_set" not in state:
            for key in [k for k in state if k.startswith("net.")]:
                state["anchor." + key[4:]] = state[key].clone()
            state["anchor_set"] = torch.tensor(False)
        elif self.hparams.relax_anchor == 0:
            for key in [k for k in state if k.startswith("anchor.") or k == "anchor_set"]:
                del state[key]

    def probes(self, x: torch.Tensor) -> torch.Tensor:
        """Hutchinson probe vectors for ``x``, from the global generator."""
        return probe_vectors(x, self.hparams.n_probes, self.hparams.probe, None)

    def continuity_loss(self, x: torch.Tensor, s: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss and its parts on noised points ``x`` (B, d) with scores ``s``; the batch is
        the last axis but one, so a leading axis of ensemble members gives a loss per member.

        With ``compile=True`` the computation runs through ``torch.compile`` (fused kernels:
        about twice as fast on a CPU for an ensemble, after ~30 s of compiling); random draws
        stay outside it, so the same generators feed it."""
        hp = self.hparams
        relaxing = bool(self.training and self.relaxing)
        sampled = hp.divergence == "hutchinson" and not (hp.estimator == "expected" or relaxing)
        probes = self.probes(x) if sampled else None
        if hp.get("compile", False):
            if self not in _COMPILED:  # kept outside the module: copies of it compile anew
                _COMPILED[self] = torch.compile(self._continuity_loss)
            return _COMPILED[self](x, s, relaxing, probes)
        return self._continuity_loss(x, s, relaxing, probes)

    def _continuity_loss(
        self, x: torch.Tensor, s: torch.Tensor, relaxing: bool, probes: torch.Tensor | None
    ) -> dict[str, torch.Tensor]:
        hp = self.hparams
        h = self.net.pre_norm(x)
        mean, std = self.net.norm.stats(h)
        if self.training:
            self.net.norm.update_running_stats(h)

        def v_fn(y):  # per-sample field; the batch statistics enter as constants
            return (self.net.pre_norm(y) - mean) / std

        if hp.estimator == "expected" or relaxing:
            v, jac = jacobian(v_fn, x)
            div = trace(jac)
            v_dot_s = (v * s).sum(-1)
            weight = hp.relax_penalty if relaxing else 1.0
            residual = (div + v_dot_s) ** 2
            if weight:
                residual = residual + weight * hutchinson_variance(jac, hp.probe) / hp.n_probes
            parts = {"div": div.abs().mean(), "v_dot_s": v_dot_s.abs().mean()}
            if relaxing and hp.relax_anchor > 0:
                with torch.no_grad():
                    v_0 = self.anchor.with_running_stats(x)
                distance = ((v - v_0) ** 2).sum(-1)
                parts["anchor"] = distance.mean()
                residual = residual + hp.relax_anchor * distance
            return {"loss": residual.mean(-1), **parts}
        v, est = divergence_estimates(v_fn, x, hp.divergence, hp.n_probes, hp.probe, probes=probes)
        v_dot_s = (v * s).sum(-1)
        if hp.estimator == "product":
            half = est.shape[0] // 2
            residual = (est[:half].mean(0) + v_dot_s) * (est[half:].mean(0) + v_dot_s)
        else:
            residual = (est.mean(0) + v_dot_s) ** 2
        return {
            "loss": residual.mean(-1),
            "div": est.mean(0).abs().mean(),
            "v_dot_s": v_dot_s.abs().mean(),
        }

    def on_train_epoch_start(self) -> None:
        if self.relaxing:
            self.start_relaxation()
        lr = self.hparams.relax_lr
        if self.relaxing and lr is not None:
            for group in self.optimizers().optimizer.param_groups:
                group["lr"] = lr

    def loss_parts(self, x0: torch.Tensor) -> dict[str, torch.Tensor]:
        """One training step's loss and its parts: ``x0`` noised, scored, the continuity loss."""
        x = self.score_model.noise(x0)
        with torch.no_grad():
            s = self.score(x)
        return self.continuity_loss(x, s)

    @torch.no_grad()
    def calibrate(self, x0: torch.Tensor) -> None:
        """Set the batch norm's statistics from many noised points (more exact than the EMA)."""
        n = min(len(x0), self.hparams.calibration_points)
        idx = torch.randperm(len(x0))[:n]
        x = self.score_model.noise(x0[idx].to(self.device))
        self.net.norm.set_running_stats(self.net.pre_norm(x))

    def configure_optimizers(self):
        hp = self.hparams
        return build_optimizer(self, hp.lr, hp.weight_decay, hp.lr_schedule)


def _check_loss_settings(divergence: str, probe: str, estimator: str, n_probes: int) -> None:
    """The divergence, probe and estimator names, and the combinations that work together."""
    if divergence not in METHODS:
        raise ValueError(f"flow.model.divergence={divergence!r}: choose one of {METHODS}")
    if probe not in PROBES:
        raise ValueError(f"flow.model.probe={probe!r}: choose one of {PROBES}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"flow.model.estimator={estimator!r}: choose one of {ESTIMATORS}")
    if estimator == "product" and (divergence != "hutchinson" or n_probes < 2):
        raise ValueError(
            "flow.model.estimator=product needs flow.model.divergence=hutchinson and "
            "flow.model.n_probes >= 2 (two independent halves of the probes)"
        )
    if estimator == "expected" and divergence != "hutchinson":
        raise ValueError(
            "flow.model.estimator=expected is the mean of the Hutchinson loss over its "
            "probes; it needs flow.model.divergence=hutchinson"
        )


def _check_relaxation(
    relax_epochs: int,
    relax_penalty: float,
    relax_lr: float | None,
    relax_anchor: float,
    lr_schedule: str,
) -> None:
    """The relaxation stage's settings: ranges, and an anchor or lr only with a stage to use it."""
    if (
        relax_epochs < 0
        or relax_penalty < 0
        or relax_anchor < 0
        or (relax_lr is not None and relax_lr <= 0)
    ):
        raise ValueError(
            f"flow.model.relax_epochs={relax_epochs}, relax_penalty={relax_penalty}, "
            f"relax_anchor={relax_anchor}, relax_lr={relax_lr}: need epochs >= 0, "
            f"penalty >= 0, anchor >= 0, lr > 0 or null"
        )
    if relax_anchor > 0 and not relax_epochs:
        raise ValueError(
            f"flow.model.relax_anchor={relax_anchor} anchors the relaxation stage; "
            f"set flow.model.relax_epochs > 0 too (or relax_anchor=0)"
        )
    if relax_epochs and relax_lr is not None and lr_schedule != "constant":
        raise ValueError(
            f"flow.model.relax_lr={relax_lr} replaces a constant learning rate; with "
            f"lr_schedule={lr_schedule} set flow.model.relax_lr=null to keep the schedule"
        )
