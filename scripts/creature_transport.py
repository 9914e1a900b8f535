"""Does a drift carry a creature along? ``python scripts/creature_transport.py RUN_DIR
[--cache-dir DIR] [--time 10] [--speed 1] [--substeps 4] [--draws 2] [--turns 0]
[--drifts none flow advection exact glide]`` on a finished alife run (its score model from the
cache, its icon, its flow).

One icon (turned by ``--turns`` quarter turns) is placed at the centre of a canvas four icons
wide, noised to the score's level (fixed seeds), and run through the irreversible Langevin SDE dx =
(v + eta s) dt + sqrt(2 eta) dW for ``--time`` units under these drifts v: none (Langevin alone);
the run's flow; T x, advection at ``--speed`` pixels per unit time along x (the translation
generator, exact for a density invariant under the shifts it generates, as scatters on a periodic
canvas nearly are); and the same advection written as the exact construction div A + A s
(:func:`eqflow.dynamics.transport.exact_advection`, whose div A is T x); and flow=glide at
``--speed`` along the creature's own heading. Prints, per drift, the
creature's displacement (the centroid of the denoised frame's contrast, pixels and body lengths,
over the draws where it did not dissolve altogether), the share of its contrast kept and the draws
where it dissolved (docs/exact_flows.md, "What carries a creature")"""

import argparse
from pathlib import Path

import torch

from eqflow.dynamics.integrators import sde_heun
from eqflow.dynamics.transport import central_advection, exact_advection
from eqflow.models import GlideFlow
from eqflow.models.score import noise_to_level
from eqflow.runs import load_run

DRIFTS = {
    "none": "Langevin alone",
    "flow": "the run's flow",
    "advection": "T x, advection alone",
    "exact": "div A + A s, its exact construction",
    "glide": "flow=glide, each creature along its heading",
}


def lone_icon(icon, turns: int = 0, background=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """(1, 3, 4h, 4w) in [-1, 1]: the RGBA ``icon`` (h, w, 4) in [0, 1], turned by ``turns``
    quarter turns, over a canvas of the ``background`` colour (RGB in [-1, 1])."""
    icon = torch.rot90(torch.as_tensor(icon, dtype=torch.float32), turns, (0, 1))
    h, w = icon.shape[:2]
    background = torch.as_tensor(background, dtype=torch.float32).view(3, 1, 1)
    canvas = background.expand(3, 4 * h, 4 * w).clone()[None]
    alpha = icon[..., 3]
    top, left = 3 * h // 2, 3 * w // 2
    paint = alpha * (icon[..., :3].permute(2, 0, 1) * 2 - 1) + (1 - alpha) * background
    canvas[0, :, top : top + h, left : left + w] = paint
    return canvas


def centroid(mass: torch.Tensor) -> torch.Tensor:
    """(y, x) centroid of a (H, W) mass."""
    ys, xs = torch.meshgrid(
        torch.arange(mass.shape[0], dtype=mass.dtype),
        torch.arange(mass.shape[1], dtype=mass.dtype),
        indexing="ij",
    )
    return torch.stack([(mass * ys).sum(), (mass * xs).sum()]) / mass.sum()


def contrast(model, x: torch.Tensor, background: torch.Tensor, threshold: float = 0.1):
    """The denoised frame's squared distance from the ``background`` colour (3, 1, 1), where it
    exceeds ``threshold``."""
    mass = (model.denoise(x).clamp(-1, 1) - background).pow(2).sum(1)[0]
    return mass * (mass > threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--time", type=float, default=10.0)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--substeps", type=int, default=4)
    parser.add_argument("--draws", type=int, default=2)
    parser.add_argument("--turns", type=int, default=0)
    parser.add_argument("--drifts", nargs="+", default=list(DRIFTS), choices=list(DRIFTS))
    args = parser.parse_args()
    run = load_run(args.run, args.cache_dir, need_metrics=False)
    model, flow = run.flow.score_model, run.flow
    system, sde = run.data.system, run.cfg.measure.creatures  # the run's own SDE settings
    background = torch.as_tensor(system.background, dtype=torch.float32) * 2 - 1
    canvas = lone_icon(system.icon, args.turns, background).to(flow.device)
    background = background.view(3, 1, 1).to(flow.device)
    size = system.icon.shape[1]
    u = torch.zeros(1, 2, *canvas.shape[-2:], device=flow.device)
    u[:, 0] = args.speed
    level = float(model.alpha)
    drifts = {
        "none": lambda x, s: torch.zeros_like(x),
        "flow": flow.drift,
        "advection": lambda x, s: central_advection(x, u),
        "exact": lambda x, s: exact_advection(x, s, u, level),
    }
    if "glide" in args.drifts:  # calibrated from the run's scatters only when it is asked for
        glide = GlideFlow(model, 3, speed=args.speed, spatial=True).to(flow.device)
        glide.calibrate(run.data.snapshots.x)
        drifts["glide"] = glide.drift
    dt, steps = sde.dt / args.substeps, round(args.time / sde.dt) * args.substeps
    print(f"{args.time} time units; T x moves the image {args.speed * args.time:.1f} px along x")
    print("drift\tdisplacement x, y (px)\tbody lengths along x\tcontrast kept\tdissolved")
    for name in args.drifts:
        drift = drifts[name]
        moved, kept = [], []
        for draw in range(args.draws):
            x0 = noise_to_level(canvas, model.alpha, torch.Generator().manual_seed(draw))
            g = torch.Generator().manual_seed(100 + draw)
            with torch.no_grad():
                x = sde_heun(
                    drift, flow.score, x0, dt, steps, sde.eta, generator=g, drift_from_score=True
                )
                start, end = contrast(model, x0, background), contrast(model, x, background)
            kept.append(float(end.sum() / start.sum()))
            if end.sum() > 0:  # a creature dissolved altogether has no centroid
                moved.append(centroid(end) - centroid(start))
        dy, dx = torch.stack(moved).mean(0).tolist() if moved else (float("nan"),) * 2
        kept_share = sum(kept) / len(kept)
        print(
            f"{name}: {DRIFTS[name]}\t{dx:+.2f}, {dy:+.2f}\t{dx / size:+.3f}\t{kept_share:.2f}"
            f"\t{args.draws - len(moved)} of {args.draws}"
        )


if __name__ == "__main__":
    main()
