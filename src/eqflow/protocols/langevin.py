"""The irreversible Langevin SDE runs of the image protocols: one run with its EMA
representation and frames, and the generator forks that give batched runs the noise of runs made
one after the other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from eqflow.dynamics.integrators import sde_heun
from eqflow.dynamics.stiffness import (
    drift_is_skew_in_score,
    skew_operator_norm,
    stable_substeps,
    step_excess,
)
from eqflow.metrics.advection import translation_share
from eqflow.models.exact_local import content_motion
from eqflow.models.score import noise_to_level

Field = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SDERecord:
    """What one SDE run leaves: the EMA representation and frames for display."""

    representation: torch.Tensor
    final: torch.Tensor
    frames: list[torch.Tensor] = field(default_factory=list)


ScoreDrift = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def langevin_representation(
    drift: ScoreDrift,
    score: Field,
    x0: torch.Tensor,
    *,
    eta: float,
    dt: float,
    steps: int,
    ema: float,
    ema_until: int,
    generator: torch.Generator | None = None,
    noise: Callable[[torch.Tensor], torch.Tensor] | None = None,
    frame_every: int = 0,
    frame: Field | None = None,
) -> SDERecord:
    """Run the SDE for ``steps`` Heun steps from ``x0`` (B, C, H, W) with velocity
    ``drift(x, s)`` (``s`` the score at ``x``, computed once per evaluation); the representation is
    ``EMA_{ema_until} - x0`` per image, the EMA ``m_k = ema m_{k-1} + (1 - ema) x_k``, m_0 = x0.
    Every ``frame_every`` steps, ``frame(x)`` (e.g. the denoised x0_hat) is kept on the CPU.
    The noise comes from ``generator``, or from ``noise(x)`` (see :class:`NoiseStreams`)."""
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

    final = sde_heun(
        drift,
        score,
        x0,
        dt,
        steps,
        eta,
        generator=generator,
        callback=watch,
        drift_from_score=True,
        noise=noise,
    )
    return SDERecord(state["rep"], final, frames)


def fork(generator: torch.Generator) -> torch.Generator:
    """A new generator in ``generator``'s present state."""
    out = torch.Generator(device=generator.device)
    out.set_state(generator.get_state())
    return out


def skip_draws(generator: torch.Generator, steps: int, shape: tuple, dtype: torch.dtype) -> None:
    """Advance ``generator`` past ``steps`` normal draws of ``shape`` (what an SDE run takes)."""
    for _ in range(steps):
        torch.randn(shape, generator=generator, dtype=dtype, device=generator.device)


def noised_views(flow, images: torch.Tensor, seed: int = 0) -> tuple:
    """``(x, g)``: ``images`` (N, C, H, W) noised to the level the flow's score reads, with
    noise from a generator of ``seed`` (returned, for further draws): the same views for every
    flow, so that the readings below compare flows on one footing."""
    g = torch.Generator().manual_seed(seed)
    x = noise_to_level(images.float().cpu(), flow.score_model.alpha.cpu(), g).to(flow.device)
    return x, g


def flow_translation_share(flow, images: torch.Tensor, seed: int = 0) -> float:
    """The mean share of the flow's field that a rigid translation of the image explains
    (:func:`eqflow.metrics.advection.translation_share`), on ``images`` (N, C, H, W) noised to
    the level the score reads, with noise of a fixed ``seed``: the same views for every flow."""
    x, _ = noised_views(flow, images, seed)
    with torch.no_grad():
        v = flow.drift(x, flow.score(x))
    return float(translation_share(v, x).mean())


def flow_content_share(flow, images: torch.Tensor, seed: int = 0, chunk: int = 8) -> float:
    """The share of the flow's |v|^2 that moves the clean content: E|d x0_hat|^2 / E|v|^2 with
    d x0_hat Tweedie's clean image's change along v (:func:`content_motion`), on ``images``
    noised as in :func:`noised_views`. Near 0 for a field that only stirs the noise.
    The second derivatives through the score go ``chunk`` images at a time (memory)."""
    x, _ = noised_views(flow, images, seed)
    flow.score_model.allow_second_derivatives()
    moved_sq, v_sq = 0.0, 0.0
    for part in x.split(chunk):
        with torch.no_grad():
            v = flow.drift(part, flow.score(part))
        moved = content_motion(flow.score, part, v, float(flow.score_model.alpha)).detach()
        moved_sq, v_sq = moved_sq + float(moved.pow(2).sum()), v_sq + float(v.pow(2).sum())
    return moved_sq / v_sq


def flow_stiffness(
    flow, images: torch.Tensor, eta: float, dt: float, substeps="auto", seed: int = 0
) -> dict:
    """How stiff the flow's SDE is where the denoiser is sure, on ``images`` noised as in
    :func:`noised_views` (:mod:`eqflow.dynamics.stiffness`): ``drift_stiffness``, the
    spectral radius of A in v = A(x) s; ``heun_substeps``, the Heun substeps a step of ``dt``
    takes (``substeps``; auto: the fewest that keep the scheme within 1 % of the SDE's own
    damping); ``heun_excess``, the scheme's amplification of the stiffest mode over that
    damping, a step, at those substeps (1: exact; above 1 the scheme, not the flow, breaks the
    density). A drift that is not a skew map of the score takes ``substeps`` (auto: 1)."""
    alpha = flow.score_model.alpha
    x, g = noised_views(flow, images, seed)
    u, w = (torch.randn(x.shape, generator=g).to(x) for _ in range(2))
    with torch.no_grad():
        if not drift_is_skew_in_score(flow.drift, x, u, w):
            return {"heun_substeps": 1 if substeps == "auto" else int(substeps)}
        norms = skew_operator_norm(lambda d: flow.drift(x, d.to(x)).cpu(), tuple(x.shape), g)
    rho, noise_var = float(norms.max()), float(1 - alpha)
    k = stable_substeps(rho, eta, dt, noise_var) if substeps == "auto" else int(substeps)
    excess = step_excess(rho, eta, dt, noise_var, k)
    return {"drift_stiffness": rho, "heun_substeps": k, "heun_excess": excess}
