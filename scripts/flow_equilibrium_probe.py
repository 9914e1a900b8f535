"""How close trained flows come to an equilibrium flow, and how alike they are.

For each run directory: the root-mean-square continuity residual div v + v . s on noised data
points beside its two terms (exact divergence, float64), the median speed |v| along RK4
trajectories from those points (dt 0.1) and the spread of their end points (a spread near
zero means every trajectory fell onto one attracting fixed point, which a flow that preserves
p cannot have). Then |cos| between every pair of flows' representations (docs/method.md §6).

    python benchmarks/flow_equilibrium_probe.py outputs/<sweep>/0 outputs/<sweep>/1 [--points 256]
"""

from __future__ import annotations

import argparse
import itertools

import torch

from eqflow.dynamics import integrate_ode, jacobian
from eqflow.dynamics.divergence import trace
from eqflow.metrics import aligned_abs_cosine, representation
from eqflow.runs import load_run


def residual_terms(flow, x: torch.Tensor) -> dict[str, float]:
    v, jac = jacobian(flow.velocity, x)
    div = trace(jac)
    v_dot_s = (v * flow.score(x)).sum(-1)

    def rms(t):
        return t.pow(2).mean().sqrt().item()

    return {"rms residual": rms(div + v_dot_s), "rms v.s": rms(v_dot_s), "rms div": rms(div)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--points", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    runs = [load_run(r) for r in args.runs]
    g = torch.Generator().manual_seed(args.seed)
    data = runs[0].data.x
    data = data[torch.randperm(len(data), generator=g)[: max(args.points, 1024)]].double()
    x0, rep_points = data[: args.points], data[:1024]
    eps = torch.randn(
        x0.shape, generator=g, dtype=x0.dtype
    )  # the same noised points for every flow
    checkpoints = (0, args.steps // 10, args.steps // 2, args.steps)
    print(
        f"| run | rms residual | rms v.s | rms div | median speed at steps {checkpoints} "
        f"| end-point spread |\n|---|---|---|---|---|---|"
    )
    reps = []
    for path, run in zip(args.runs, runs):
        flow = run.flow.double()
        a = flow.alpha.to(x0)
        xt = torch.sqrt(a) * x0 + torch.sqrt(1 - a) * eps
        terms = residual_terms(flow, xt)
        with torch.no_grad():
            traj = integrate_ode(flow.velocity, xt, 0.1, args.steps)
            speeds = [flow.velocity(traj[k]).norm(dim=-1).median().item() for k in checkpoints]
        spread = traj[-1].std(0).max().item()
        print(
            f"| {path} | {terms['rms residual']:.3f} | {terms['rms v.s']:.3f} | "
            f"{terms['rms div']:.3f} | {', '.join(f'{s:.3g}' for s in speeds)} | {spread:.3g} |"
        )
        with torch.no_grad():
            reps.append(representation(flow.velocity, rep_points * torch.sqrt(a)))
    if len(reps) > 1:
        print("\n| flow a | flow b | abs cos |\n|---|---|---|")
        for (i, a), (j, b) in itertools.combinations(enumerate(reps), 2):
            print(f"| {args.runs[i]} | {args.runs[j]} | {float(aligned_abs_cosine(a, b)):.4f} |")


if __name__ == "__main__":
    main()
