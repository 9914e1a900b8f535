"""Optimiser and learning-rate schedule shared by the Lightning modules."""

from __future__ import annotations

import pytorch_lightning as pl
import torch

LR_SCHEDULES = ("constant", "cosine", "onecycle")


def build_optimizer(module: pl.LightningModule, lr: float, weight_decay: float, schedule: str):
    """Adam (weight decay as published) with a per-step schedule over the whole fit."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule={schedule!r}: choose one of {LR_SCHEDULES}")
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if schedule == "constant":
        return optimizer
    total = max(int(module.trainer.estimated_stepping_batches), 1)
    if schedule == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=total, eta_min=lr * 1e-2
        )
    else:
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total, pct_start=0.1
        )
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
