"""How far from an equilibrium flow of the score model is each drift? ``python
scripts/glide_residual.py RUN_DIR [--cache-dir DIR] [--images 8] [--probes 16]`` on a finished
alife run (its score model from the cache, its data).

On the run's training images noised to the score's level (fixed seed), it prints, per drift v,
the continuity residual div v + v . s of div(p v) = p (div v + v . s), as rms(div v + v . s) /
rms(|v| |s|): 0 for a flow that keeps the score model's density, and the share rms(v . s) /
rms(|v| |s|) that comes from v . s alone (div v by Hutchinson's estimator with Rademacher
probes). Drifts: the run's flow; flow=glide; T x, a uniform shift (exact for a density invariant
under the shifts it generates); and a control that keeps no density of creatures, advection at a
fixed smooth random velocity field of the same rms speed, which shears and squeezes them
(docs/alife.md, "Creatures that travel")."""

import argparse
from pathlib import Path

import torch

from eqflow.dynamics.heading import gaussian_window
from eqflow.dynamics.skew import circular_conv
from eqflow.dynamics.transport import central_advection
from eqflow.models import GlideFlow
from eqflow.protocols.langevin import noised_views
from eqflow.runs import load_run


def hutchinson_divergence(field, x: torch.Tensor, probes: int, seed: int = 0) -> torch.Tensor:
    """(B,): the mean of z . J z over ``probes`` Rademacher probes z, per image."""
    g = torch.Generator().manual_seed(seed)
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for _ in range(probes):
        z = (2 * torch.randint(0, 2, x.shape, generator=g) - 1).to(x)
        _, jz = torch.autograd.functional.jvp(field, x, z)
        total += (z * jz).flatten(1).sum(1).detach().cpu()
    return total / probes


def smooth_random_velocity(shape: tuple, speed: float, seed: int = 0) -> torch.Tensor:
    """(1, 2, H, W): a fixed velocity field, white noise smoothed over 4 pixels, rms ``speed``."""
    g = torch.Generator().manual_seed(seed)
    u = circular_conv(torch.randn(2, 1, *shape[-2:], generator=g), gaussian_window(4.0))
    return (u * speed / u.pow(2).sum(0).mean().sqrt()).view(1, 2, *shape[-2:])


def residuals(field, score, x: torch.Tensor, probes: int) -> tuple[float, float]:
    """rms(div v + v . s) / rms(|v| |s|), and rms(v . s) / rms(|v| |s|)."""
    div = hutchinson_divergence(field, x, probes)
    with torch.no_grad():
        v, s = field(x), score(x)
    vs = (v * s).flatten(1).sum(1).cpu()
    scale = (v.flatten(1).norm(dim=1) * s.flatten(1).norm(dim=1)).pow(2).mean().sqrt().cpu()
    return float((div + vs).pow(2).mean().sqrt() / scale), float(vs.pow(2).mean().sqrt() / scale)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--probes", type=int, default=16)
    args = parser.parse_args()
    run = load_run(args.run, args.cache_dir, need_metrics=False)
    flow, images = run.flow, run.data.snapshots.x
    glide = GlideFlow(flow.score_model, images.shape[1], spatial=True).to(flow.device)
    glide.calibrate(images)
    x, _ = noised_views(flow, images[: args.images], seed=0)
    uniform = torch.zeros(1, 2, *x.shape[-2:], device=x.device)
    uniform[:, 0] = 1.0
    random_u = smooth_random_velocity(x.shape, 1.0).to(x.device)
    drifts = {
        "the run's flow": flow.velocity,
        "flow=glide": glide.velocity,
        "T x (uniform shift)": lambda y: central_advection(y, uniform),
        "control: smooth random advection": lambda y: central_advection(y, random_u),
    }
    print("drift\trms(div v + v.s) / rms(|v||s|)\trms(v.s) / rms(|v||s|)")
    for name, field in drifts.items():
        full, along_score = residuals(field, flow.score, x, args.probes)
        print(f"{name}\t{full:.4f}\t{along_score:.4f}")


if __name__ == "__main__":
    main()
