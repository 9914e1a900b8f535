"""Errors with messages that name the problem and the fix."""
from __future__ import annotations

import torch


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the run stops before writing anything more."""


class RunInterrupted(RuntimeError):
    """The run was stopped (SIGTERM) before it finished; its last checkpoint can resume it."""


def check_finite_loss(loss: torch.Tensor, what: str, step: int) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteLossError(
            f"{what} loss became {loss.item()} at step {step}; stopping so no garbage is written. "
            f"Lower the learning rate ({what}.model.lr), check the data for NaNs, or resume from "
            f"the last checkpoint written before it (every checkpoint holds finite weights): "
            f"ckpt_path=<run>/checkpoints/last.ckpt.")
