"""Score models: what a flow needs of a diffusion model (:class:`Score`), and the
low-dimensional DDPM (:class:`ScoreModule`) whose score s(x) = grad log p_t(x) feeds the flows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from eqflow.errors import check_finite_loss
from eqflow.models.optim import build_optimizer
from eqflow.models.schedules import CosineSchedule
from eqflow.nets import ScoreMLP
from eqflow.nets.mlp import EnergyMLP
from eqflow.settings import Rule, check_setting

PREDICTIONS = ("eps", "v")
PREDICTION = Rule(str, choices=PREDICTIONS)  # score.model.prediction
SCORE_LEVEL = Rule(float, ge=0, le=1)  # score.model.t: the diffusion time the score is read at


def score_from_prediction(
    pred: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, prediction: str
) -> torch.Tensor:
    """Score at noise level ``alpha`` from an eps- or v-prediction (docs/method.md §3)."""
    if prediction == "eps":
        return -pred / torch.sqrt(1 - alpha)
    if prediction == "v":
        x0_hat = torch.sqrt(alpha) * x - torch.sqrt(1 - alpha) * pred
        return (torch.sqrt(alpha) * x0_hat - x) / (1 - alpha)
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def x0_from_prediction(
    pred: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, prediction: str
) -> torch.Tensor:
    """The denoised estimate x0_hat from an eps- or v-prediction."""
    if prediction == "eps":
        return (x - torch.sqrt(1 - alpha) * pred) / torch.sqrt(alpha)
    if prediction == "v":
        return torch.sqrt(alpha) * x - torch.sqrt(1 - alpha) * pred
    raise ValueError(f"unknown prediction {prediction!r}; choose one of {PREDICTIONS}")


def noise_to_level(
    x0: torch.Tensor, alpha: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """``sqrt(a) x0 + sqrt(1 - a) eps``: ``x0`` noised to the level ``alpha`` = a, with eps
    drawn from ``generator`` if given."""
    if generator is None:
        eps = torch.randn_like(x0)
    else:  # drawn where the generator lives (a CPU generator also serves CUDA data)
        eps = torch.randn(
            x0.shape, generator=generator, device=generator.device, dtype=x0.dtype
        ).to(x0.device)
    a = alpha.to(x0)
    return torch.sqrt(a) * x0 + torch.sqrt(1 - a) * eps


def tweedie(x: torch.Tensor, s: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """x0_hat = (x + (1 - a) s) / sqrt(a): the clean sample a score ``s`` at the level ``alpha``
    sees in ``x`` (Tweedie's formula)."""
    a = alpha.to(x)
    return (x + (1 - a) * s) / torch.sqrt(a)


class Score(ABC):
    """The interface every score model offers the flows, the protocols and the baselines.

    Subclasses define ``alpha`` (alpha_bar at the level the score is read at) and ``score(x)``;
    ``noise``, ``denoise`` follow from them. ``network`` is the network the score is read from
    where redrawing its weights makes sense (image models; the re-weight baseline), else None;
    ``sample`` exists where the model can draw samples (``can_sample``).
    """

    alpha: torch.Tensor
    can_sample: bool = False
    trains_every_level: bool = True
    network: torch.nn.Module | None = None

    @abstractmethod
    def score(self, x: torch.Tensor) -> torch.Tensor:
        """grad log p_t at ``x``, at the level ``alpha``."""

    def noise(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x0`` noised to this model's level (:func:`noise_to_level`)."""
        return noise_to_level(x0, self.alpha, generator)

    def allow_second_derivatives(self) -> None:
        """Make ``score`` differentiable twice (a flow that needs the score's Jacobian calls
        this); a no-op where it already is."""

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """x0_hat (:func:`tweedie`): the clean sample the score sees in ``x``."""
        return tweedie(x, self.score(x), self.alpha)

    def sample(self, n: int, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        raise TypeError(f"{type(self).__name__} cannot draw samples (can_sample is False)")


class ScoreModule(Score, pl.LightningModule):
    """Low-dimensional DDPM with the published cosine schedule; ``.score(x)`` at level ``t``."""

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "relu",
        prediction: str = "eps",
        num_steps: int = 100,
        t: float = 0.1,
        lr: float = 1e-2,
        weight_decay: float = 1e-5,
        lr_schedule: str = "constant",
    ):
        super().__init__()
        check_setting("score.model.prediction", prediction, PREDICTION)
        check_setting("score.model.t", t, SCORE_LEVEL)
        self.save_hyperparameters()
        self.net = ScoreMLP(dim, hidden, activation)
        self.schedule = CosineSchedule(num_steps)
        self.register_buffer("alpha_bar", self.schedule.alpha_bar.clone())

    @property
    def alpha(self) -> torch.Tensor:
        """alpha_bar at the level ``t`` the score is evaluated at."""
        return self.alpha_bar[self.schedule.index(self.hparams.t)]

    def score(self, x: torch.Tensor) -> torch.Tensor:
        a = self.alpha.to(x)
        t = self.schedule.time_of_index(self.schedule.index(self.hparams.t)).to(x)
        return score_from_prediction(
            self.net(x, t.expand(x.shape[0])), x, a, self.hparams.prediction
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)

    def training_step(self, x0: torch.Tensor, batch_idx: int) -> torch.Tensor:
        k = torch.randint(0, self.schedule.num_steps, (x0.shape[0],), device=x0.device)
        a = self.alpha_bar[k].unsqueeze(-1)
        eps = torch.randn_like(x0)
        x_t = torch.sqrt(a) * x0 + torch.sqrt(1 - a) * eps
        target = (
            eps
            if self.hparams.prediction == "eps"
            else torch.sqrt(a) * eps - torch.sqrt(1 - a) * x0
        )
        loss = F.mse_loss(self.net(x_t, self.schedule.time_of_index(k)), target)
        check_finite_loss(loss, "score", self.global_step)
        self.log("score/loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return build_optimizer(
            self, self.hparams.lr, self.hparams.weight_decay, self.hparams.lr_schedule
        )


class EnergyScoreModule(ScoreModule):
    """:class:`ScoreModule` whose network is the gradient of a scalar energy, so the score
    s = -grad E / sqrt(1 - a) (eps-prediction) is a gradient field: its Jacobian is symmetric,
    and an exact flow v = div A + A s built on it has no continuity residual at all."""

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        prediction: str = "eps",
        num_steps: int = 100,
        t: float = 0.1,
        lr: float = 1e-2,
        weight_decay: float = 1e-5,
        lr_schedule: str = "constant",
    ):
        super().__init__(
            dim, hidden, activation, prediction, num_steps, t, lr, weight_decay, lr_schedule
        )
        self.net = EnergyMLP(dim, hidden, activation)
