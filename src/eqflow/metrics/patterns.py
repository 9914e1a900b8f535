"""Fidelity of image dynamics to a pattern simulator (Table 2 protocol, PAPER_NOTES 6).

From one clean pattern x0, run the irreversible Langevin SDE ``dx = (v + eta s) dt +
sqrt(2 eta) dW`` by Heun's method; the representation is the EMA of the trajectory at step
``ema_until`` minus x0. The ground truth is the simulator's state after ``truth_steps`` steps
from the same pattern, minus the start. Reported: |cos| between the two.

Baselines share the Langevin term and replace v by
- ``random``: a random (not skew) 1 x 1 kernel applied to the score, unit Frobenius norm;
- ``reweight``: the score network with every weight tensor redrawn from a normal with that
  tensor's own mean and std; its output is rescaled per image to the norm of ``D s`` for a
  unit-Frobenius 1 x 1 kernel on C channels (|s| / sqrt(C)), so only its direction differs.
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch.func import functional_call, stack_module_state, vmap

from eqflow.dynamics.integrators import sde_heun

Field = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SDERecord:
    """What one SDE run leaves: the EMA representation and frames for display."""

    representation: torch.Tensor
    final: torch.Tensor
    frames: list[torch.Tensor] = field(default_factory=list)


ScoreDrift = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def langevin_representation(drift: ScoreDrift, score: Field, x0: torch.Tensor, *, eta: float, dt: float,
                            steps: int, ema: float, ema_until: int,
                            generator: torch.Generator | None = None,
                            frame_every: int = 0, frame: Field | None = None) -> SDERecord:
    """Run the SDE for ``steps`` Heun steps from ``x0`` (B, C, H, W) with velocity
    ``drift(x, s)`` (``s`` the score at ``x``, computed once per evaluation); the representation is
    ``EMA_{ema_until} - x0`` per image, the EMA ``m_k = ema m_{k-1} + (1 - ema) x_k``, m_0 = x0.
    Every ``frame_every`` steps, ``frame(x)`` (e.g. the denoised x0_hat) is kept on the CPU."""
    if not 0 < ema_until <= steps:
        raise ValueError(f"ema_until must lie in [1, steps={steps}], got {ema_until}")
    state = {"ema": x0.clone(), "rep": None}
    frames = [frame(x0).cpu()] if frame_every and frame is not None else []

    def watch(k: int, x: torch.Tensor) -> None:
        if k <= ema_until:
            state["ema"].mul_(ema).add_(x, alpha=1 - ema)
            if k == ema_until:
                state["rep"] = state["ema"] - x0
        if frame_every and frame is not None and k % frame_every == 0:
            frames.append(frame(x).cpu())

    final = sde_heun(drift, score, x0, dt, steps, eta, generator=generator, callback=watch,
                     drift_from_score=True)
    return SDERecord(state["rep"], final, frames)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos between each image of ``a`` (B, ...) and ``b`` (one image or B of them)."""
    a = a.flatten(1).double()
    b = b.flatten(1).double().expand_as(a)
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def abs_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|cos| between each image of ``a`` (B, ...) and ``b`` (one image or B of them)."""
    return cosine(a, b).abs()


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
            raise ValueError(f"StackedNetworks holds {self.n} networks; got a batch of {x.shape[0]}")

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


@dataclass
class PatternFidelity:
    """One Table 2 column: the flow (both signs) and the baselines' |cos| to the truth."""

    plus: float
    minus: float
    random: list[float]
    reweight: list[float]
    record: SDERecord
    truth: torch.Tensor

    @property
    def best(self) -> float:
        return max(self.plus, self.minus)

    def summary(self, prefix: str = "table2") -> dict:
        def stats(xs):
            t = torch.tensor(xs, dtype=torch.float64)
            return float(t.mean()), float(t.std()) if len(xs) > 1 else 0.0

        rm, rs = stats(self.random)
        wm, ws = stats(self.reweight) if self.reweight else (float("nan"), float("nan"))
        return {f"{prefix}/training_free": self.best, f"{prefix}/training_free_plus": self.plus,
                f"{prefix}/training_free_minus": self.minus, f"{prefix}/random_mean": rm,
                f"{prefix}/random_std": rs, f"{prefix}/reweight_mean": wm,
                f"{prefix}/reweight_std": ws, f"{prefix}/random_draws": self.random,
                f"{prefix}/reweight_draws": self.reweight}


def pattern_fidelity(flow, simulator_step: Callable[[torch.Tensor, int], torch.Tensor],
                     x0: torch.Tensor, *, eta: float = 0.1, dt: float = 0.01, steps: int = 300,
                     ema: float = 0.9, ema_until: int = 200, truth_steps: int = 20,
                     n_draws: int = 10, generator: torch.Generator | None = None,
                     frame_every: int = 0, reweight: bool = True) -> PatternFidelity:
    """The Table 2 protocol for a training-free ``flow`` (``apply_D``, ``score``, ``score_model``)
    on one clean
    pattern ``x0`` (1, C, H, W) in model coordinates. ``simulator_step(x, n)`` advances the
    ground-truth system ``n`` steps in the same coordinates."""
    if x0.ndim != 4 or x0.shape[0] != 1:
        raise ValueError(f"pattern_fidelity takes one pattern of shape (1, C, H, W), got "
                         f"{tuple(x0.shape)}")
    truth = simulator_step(x0, truth_steps) - x0
    if float(truth.abs().max()) == 0:
        raise ValueError("the simulator leaves this pattern unchanged (a dead pattern?); "
                         "pick a pattern that moves")
    score_model = flow.score_model
    kw = dict(eta=eta, dt=dt, ema=ema, ema_until=ema_until, generator=generator)
    record = langevin_representation(lambda x, s: flow.apply_D(s), flow.score, x0, steps=steps,
                                     frame_every=frame_every, frame=getattr(score_model, "denoise", None),
                                     **kw)
    minus = langevin_representation(lambda x, s: -flow.apply_D(s), flow.score, x0, steps=ema_until,
                                    **kw)
    plus_cos = float(abs_cosine(record.representation, truth)[0])
    minus_cos = float(abs_cosine(minus.representation, truth)[0])

    channels = x0.shape[1]
    batch = x0.expand(n_draws, *x0.shape[1:]).clone()
    kernels = random_kernels(n_draws, channels, generator or torch.Generator())
    rand = langevin_representation(random_kernel_drift(kernels), flow.score, batch,
                                   steps=ema_until, **kw)
    random_cos = abs_cosine(rand.representation, truth).tolist()

    reweight_cos: list[float] = []
    if reweight and hasattr(score_model, "network"):
        # one SDE over a batch of n_draws copies; copy i moves by its own redrawn network
        nets = StackedNetworks([redrawn_network(score_model.network, generator or torch.Generator())
                                for _ in range(n_draws)])

        def redrawn_field(x: torch.Tensor) -> torch.Tensor:
            return score_model.score(x, network=nets)

        rec = langevin_representation(matched_norm(redrawn_field, channels ** -0.5), flow.score,
                                      batch, steps=ema_until, **kw)
        reweight_cos = abs_cosine(rec.representation, truth).tolist()
    return PatternFidelity(plus_cos, minus_cos, random_cos, reweight_cos, record, truth)

