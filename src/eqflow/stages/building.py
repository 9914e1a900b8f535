"""Building a run's parts from its config: the flow (single, ensemble or training-free) and the
end-of-fit protocols and callbacks."""

from __future__ import annotations

import logging

import pytorch_lightning as pl
import torch
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from eqflow.errors import ConfigError
from eqflow.models.ensemble import ENSEMBLES
from eqflow.models.exact import ExactFlowModule
from eqflow.models.score import Score
from eqflow.protocols.base import Protocol

log = logging.getLogger(__name__)


def build_flow(cfg: DictConfig, score: Score, x: torch.Tensor):
    """The flow for data ``x``: (N, d) vectors, or (N, C, H, W) images (``spatial=True``)."""
    extra = {}
    flow_class = get_class(cfg.flow.model._target_)
    if x.ndim == 4:
        if issubclass(flow_class, ExactFlowModule):
            raise ConfigError(
                f"flow=exact builds v = div A + A s from a d x d skew matrix field, "
                f"d JVPs a step; on images d = C H W = {x[0].numel()}, which is "
                f"out of reach. Use flow=training_free (v = D s with a skew "
                f"convolution: exact too, and convolutional)"
            )
        if not getattr(flow_class, "images", False):
            raise ConfigError(
                f"flow={cfg.flow.model._target_} works on vectors; for image data "
                f"use flow=training_free or flow=exact_local"
            )
        extra["spatial"] = True
    members = int(cfg.flow.get("ensemble", 1))
    if members > 1:
        if flow_class not in ENSEMBLES:
            raise ConfigError(
                f"flow.ensemble={members} trains learned flows together as one batched model, "
                f"which {cfg.flow.model._target_} does not have: sweep its seeds with "
                f"-m seed=... or set flow.ensemble=1"
            )
        settings = OmegaConf.to_container(cfg.flow.model, resolve=True)
        settings.pop("_target_")
        seeds = [int(cfg.seed) + k for k in range(members)]
        return ENSEMBLES[flow_class](score, x.shape[1], seeds=seeds, **settings)
    # plain Python containers, so checkpoints' hyper-parameters load with weights_only=True
    flow = instantiate(cfg.flow.model, score=score, dim=x.shape[1], **extra, _convert_="all")
    if not flow.trainable:
        flow.calibrate(x)  # statistics a training-free flow reads from the data (most: none)
    return flow


def build_protocols(cfg: DictConfig) -> tuple[list[Protocol], list[pl.Callback]]:
    """The ``measure`` group's protocols and the ``callbacks`` group's Lightning callbacks."""
    protocols = [instantiate(node) for node in (cfg.get("measure") or {}).values() if node]
    callbacks = [instantiate(node) for node in (cfg.get("callbacks") or {}).values() if node]
    for group, built, kind in (
        ("measure", protocols, Protocol),
        ("callbacks", callbacks, pl.Callback),
    ):
        wrong = [type(b).__name__ for b in built if not isinstance(b, kind)]
        if wrong:
            raise ConfigError(
                f"the {group} group holds {', '.join(wrong)}, not a "
                f"{kind.__name__}: protocols go in measure, Lightning callbacks "
                f"in callbacks"
            )
    return protocols, callbacks


def flow_device(cfg: DictConfig) -> torch.device:
    """Where a flow that is not fitted is measured: the trainer's accelerator (one device)."""
    accelerator = str(cfg.trainer.get("accelerator", "cpu"))
    cuda = accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available())
    return torch.device("cuda" if cuda else "cpu")


def make_trainer(cfg: DictConfig, **overrides) -> pl.Trainer:
    """The Lightning trainer ``cfg.trainer`` describes, with ``overrides``."""
    return instantiate(cfg.trainer, **overrides)
