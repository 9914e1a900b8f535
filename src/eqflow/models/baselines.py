"""Baselines a flow is compared with: flows no training made (an untrained flow network, a
training-free flow with another D) and, for images, drifts that are not equilibrium flows (a
random, not skew, 1 x 1 kernel; the score network with redrawn weights)."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable

import torch
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch.func import functional_call, stack_module_state, vmap

from eqflow.models.flow import EquilibriumFlowModule
from eqflow.models.score import Score
from eqflow.models.training_free import TrainingFreeFlow

Field = Callable[[torch.Tensor], torch.Tensor]
ScoreDrift = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def random_flow(
    score: Score, dim: int, seed: int, x0: torch.Tensor, **flow_kw
) -> EquilibriumFlowModule:
    """An untrained flow network (initialised from ``seed``), its outputs normalised on the
    noised data ``x0`` like a trained flow's; in eval mode."""
    torch.manual_seed(seed)
    flow = EquilibriumFlowModule(score, dim, **flow_kw)
    flow.calibrate(x0)
    return flow.eval()


def training_free_flow(score: Score, dim: int, seed: int) -> TrainingFreeFlow:
    """v = D s with a random skew D drawn from ``seed``; in eval mode."""
    return TrainingFreeFlow(score, dim, seed=seed).eval()


def random_kernel_drift(kernels: torch.Tensor) -> ScoreDrift:
    """v_b = P_b s_b for a batch of B images and B (C, C) matrices (1 x 1 kernels)."""

    def drift(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bij,bjhw->bihw", kernels.to(s), s)

    return drift


def random_kernels(n: int, channels: int, generator: torch.Generator) -> torch.Tensor:
    p = torch.randn(n, channels, channels, generator=generator, dtype=torch.float64)
    return (p / p.flatten(1).norm(dim=1)[:, None, None]).float()


def redrawn_network(net: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """A copy of ``net`` whose every parameter tensor is redrawn from N(its mean, its std)."""
    out = copy.deepcopy(net)
    with torch.no_grad():
        for p in out.parameters():
            std = p.std() if p.numel() > 1 else torch.zeros((), dtype=p.dtype)
            noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
            p.copy_((p.mean() + std * noise.to(p)).to(p))
    return out


class StackedNetworks:
    """Networks of one architecture evaluated as one: image ``i`` of a batch goes through
    network ``i`` (``torch.func.vmap`` over their stacked weights), which is faster than a loop
    of batch-1 calls. Called like a diffusers ``UNet2DModel``: ``(x, t) -> .sample``."""

    def __init__(self, nets: list[torch.nn.Module]):
        self.params, self.buffers = stack_module_state(nets)
        self.base = copy.deepcopy(nets[0]).to("meta")
        self.n = len(nets)

    def __call__(self, x: torch.Tensor, t: torch.Tensor):
        if x.shape[0] != self.n:
            raise ValueError(
                f"StackedNetworks holds {self.n} networks; got a batch of {x.shape[0]}"
            )

        def one(params, buffers, xi, ti):
            return functional_call(self.base, (params, buffers), (xi[None], ti[None])).sample[0]

        with warnings.catch_warnings():  # attention has no batching rule yet: a loop inside
            warnings.filterwarnings("ignore", message="There is a performance drop")
            return UNet2DOutput(sample=vmap(one)(self.params, self.buffers, x, t.expand(self.n)))


def matched_norm(field_: Field, scale: float) -> ScoreDrift:
    """``field_(x)`` rescaled per image to ``scale`` times the norm of the score ``s``."""

    def drift(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        v = field_(x)
        ratio = s.flatten(1).norm(dim=1) / v.flatten(1).norm(dim=1).clamp_min(1e-12)
        return v * (scale * ratio).view(-1, *([1] * (v.ndim - 1)))

    return drift
