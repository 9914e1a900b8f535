"""ImageScoreModule: the score of image data (Turing patterns, artificial life) from a
diffusers U-Net with circular padding and a ``DDPMScheduler`` (as published).

A :class:`eqflow.models.score.Score`: ``alpha``, ``noise(x0)``, ``score(x)``, ``denoise(x)``
(the network's prediction x0_hat, shown in animations), ``network`` (the weights the score is read
from; the re-weight baseline redraws them) and ``sample(n, size)`` (ancestral DDPM samples).
"""

from __future__ import annotations

from collections.abc import Sequence

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from diffusers.models.attention_processor import Attention, AttnProcessor
from diffusers.optimization import get_cosine_schedule_with_warmup
from torch.optim.swa_utils import AveragedModel

from eqflow.data.augment import periodic_symmetry
from eqflow.errors import check_finite_loss
from eqflow.models.score import PREDICTION, Score, score_from_prediction, x0_from_prediction
from eqflow.nets.unet import circular_unet
from eqflow.settings import Rule, check_setting

EMA_DECAY = Rule(float, gt=0, lt=1, nullable=True)  # score.model.ema_decay (null: no average)
# score.model.every_level_share: the share of training draws spread over every noise level
EVERY_LEVEL_SHARE = Rule(float, ge=0, le=1)
_SCHEDULER_PREDICTION = {"eps": "epsilon", "v": "v_prediction"}


class ExponentialAverage:
    """``AveragedModel``'s update rule for an EMA of the weights (a picklable object, so the
    module can be sent to DDP worker processes)."""

    def __init__(self, decay: float):
        self.decay = decay

    def __call__(self, averaged: list, current: list, num_averaged) -> None:
        for a, c in zip(averaged, current):
            a.lerp_(c, 1 - self.decay)


def _timestep_band(band: Sequence[int], num_train_timesteps: int) -> tuple[int, int]:
    if len(band) != 2 or not all(isinstance(b, int) for b in band):
        raise ValueError(f"score.model.train_timesteps must be two integers [lo, hi], got {band}")
    lo, hi = band
    if not 0 <= lo <= hi < num_train_timesteps:
        raise ValueError(
            f"score.model.train_timesteps={list(band)} must satisfy "
            f"0 <= lo <= hi < {num_train_timesteps}"
        )
    return int(lo), int(hi)


class ImageScoreModule(Score, pl.LightningModule):
    can_sample = True

    def __init__(
        self,
        channels: int,
        block_out_channels: Sequence[int] = (16, 32, 64),
        layers_per_block: int = 2,
        norm_num_groups: int = 8,
        prediction: str = "v",
        num_train_timesteps: int = 100,
        beta_start: float = 1e-4,
        beta_end: float = 0.1,
        timestep: int = 10,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 500,
        ema_decay: float | None = None,
        augment: bool = True,
        augment_mirror: bool = True,
        train_timesteps: Sequence[int] | None = None,
        every_level_share: float = 0.0,
    ):
        super().__init__()
        check_setting("score.model.prediction", prediction, PREDICTION)
        if not 0 <= timestep < num_train_timesteps:
            raise ValueError(
                f"score.model.timestep must lie in [0, {num_train_timesteps}), got {timestep}"
            )
        if train_timesteps is not None:
            lo, hi = _timestep_band(train_timesteps, num_train_timesteps)
            if not lo <= timestep <= hi:
                raise ValueError(
                    f"score.model.train_timesteps={[lo, hi]} must contain the score's "
                    f"timestep {timestep}; widen the band or set it to null"
                )
            train_timesteps = [lo, hi]
        check_setting("score.model.every_level_share", every_level_share, EVERY_LEVEL_SHARE)
        check_setting("score.model.ema_decay", ema_decay, EMA_DECAY)
        self.save_hyperparameters()
        self.unet = circular_unet(channels, block_out_channels, layers_per_block, norm_num_groups)
        self.scheduler = DDPMScheduler(
            num_train_timesteps=num_train_timesteps,
            beta_start=beta_start,
            beta_end=beta_end,
            beta_schedule="linear",
            prediction_type=_SCHEDULER_PREDICTION[prediction],
        )
        self.register_buffer("alphas_cumprod", self.scheduler.alphas_cumprod.clone().float())
        self.ema = None
        if ema_decay is not None:
            self.ema = AveragedModel(
                self.unet, multi_avg_fn=ExponentialAverage(ema_decay), use_buffers=True
            )
            self.ema.requires_grad_(False)

    # -- the score ---------------------------------------------------------------------------
    @property
    def alpha(self) -> torch.Tensor:
        return self.alphas_cumprod[self.hparams.timestep]

    @property
    def network(self) -> torch.nn.Module:
        """The weights the score is read from: the EMA copy if kept, else the trained ones."""
        return self.ema.module if self.ema is not None else self.unet

    def predict(
        self, x: torch.Tensor, timestep: int | torch.Tensor, network: torch.nn.Module | None = None
    ) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=x.device).expand(x.shape[0])
        return (network or self.network)(x, t).sample

    def score(self, x: torch.Tensor, network: torch.nn.Module | None = None) -> torch.Tensor:
        """s(x) at the score's level; ``network`` swaps in other weights of the same shape."""
        a = self.alpha.to(x)
        return score_from_prediction(
            self.predict(x, self.hparams.timestep, network), x, a, self.hparams.prediction
        )

    def allow_second_derivatives(self) -> None:
        """The U-Net's attention as plain matrix products (the same numbers): PyTorch's fused
        CPU attention has no second derivative and no forward mode."""
        for net in [self.unet] + ([self.ema.module] if self.ema is not None else []):
            for module in net.modules():
                if isinstance(module, Attention):
                    module.set_processor(AttnProcessor())

    def denoise(self, x: torch.Tensor) -> torch.Tensor:
        """x0_hat: the clean image the network sees in ``x`` at the score's noise level."""
        a = self.alpha.to(x)
        return x0_from_prediction(
            self.predict(x, self.hparams.timestep), x, a, self.hparams.prediction
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x)

    @property
    def trains_every_level(self) -> bool:
        """Whether training covers all noise levels (needed for ancestral sampling): no band,
        or a band with a share of draws over every level."""
        hp = self.hparams
        return hp.train_timesteps is None or hp.every_level_share > 0

    @torch.no_grad()
    def sample(
        self,
        n: int,
        size: int,
        generator: torch.Generator | None = None,
        stop_at: int | None = None,
    ) -> torch.Tensor:
        """``n`` ancestral DDPM samples of ``size`` x ``size`` from pure noise, clamped to
        [-1, 1]; with ``stop_at``, the noisy samples x_t at that timestep instead (e.g. the
        level the flow reads: the model's own population, at the level its score describes)."""
        x = torch.randn(
            n,
            self.hparams.channels,
            size,
            size,
            generator=generator,
            device=generator.device if generator is not None else "cpu",
        ).to(self.device)
        self.scheduler.set_timesteps(self.hparams.num_train_timesteps)
        for t in self.scheduler.timesteps:
            if stop_at is not None and int(t) <= stop_at:
                return x
            x = self.scheduler.step(
                self.predict(x, int(t)), int(t), x, generator=generator
            ).prev_sample
        return x.clamp(-1, 1)

    # -- training ----------------------------------------------------------------------------
    def diffusion_loss(self, x0: torch.Tensor, timestep: int | None = None) -> torch.Tensor:
        """The denoising loss at random training levels, or at ``timestep`` for every image."""
        if timestep is not None:
            k = torch.full((x0.shape[0],), timestep, device=x0.device)
        else:
            k = self.training_levels(x0.shape[0], x0.device)
        eps = torch.randn_like(x0)
        x_t = self.scheduler.add_noise(x0, eps, k)
        target = (
            eps if self.hparams.prediction == "eps" else self.scheduler.get_velocity(x0, eps, k)
        )
        return F.mse_loss(self.unet(x_t, k).sample, target)

    def training_levels(self, n: int, device) -> torch.Tensor:
        """``n`` training timesteps: uniform in ``train_timesteps`` (all levels when unset),
        except a share ``every_level_share`` drawn over every level (what the sampler needs,
        with most of the budget kept near the level the flow reads)."""
        hp = self.hparams
        top = hp.num_train_timesteps
        lo, hi = hp.train_timesteps or (0, top - 1)
        k = torch.randint(lo, hi + 1, (n,), device=device)
        share = hp.every_level_share
        if share > 0:
            spread = torch.rand(n, device=device) < share
            k = torch.where(spread, torch.randint(0, top, (n,), device=device), k)
        return k

    def training_step(self, x0: torch.Tensor, batch_idx: int) -> torch.Tensor:
        if self.hparams.augment:
            x0 = periodic_symmetry(x0, mirror=self.hparams.augment_mirror)
        loss = self.diffusion_loss(x0)
        check_finite_loss(loss, "score", self.global_step)
        self.log("score/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, x0: torch.Tensor, batch_idx: int) -> None:
        self.log(
            "score/val_loss",
            self.diffusion_loss(x0),
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
        )
        # the loss at the one level the flow reads the score from: comparable across bands
        self.log(
            "score/val_loss_at_level",
            self.diffusion_loss(x0, self.hparams.timestep),
            on_step=False,
            on_epoch=True,
            sync_dist=True,
        )

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        if self.ema is not None:
            self.ema.update_parameters(self.unet)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(
            self.unet.parameters(), lr=hp.lr, weight_decay=hp.weight_decay
        )
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = get_cosine_schedule_with_warmup(
            optimizer, min(hp.warmup_steps, total // 2), total
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
