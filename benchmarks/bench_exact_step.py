"""Cost of one training step: the exact flow (v = div A + A s, strain loss) against the published
loss in closed form (the K = 10 Hutchinson loss averaged over its probes), eager and compiled,
one flow and an ensemble of K, on Lorenz-sized data (d = 3).

    python benchmarks/bench_exact_step.py [--batch 2048] [--members 1 20] [--steps 20] [--compile]

One step = each member's batch noised, scored (the exact flow also takes the score's Jacobian),
the loss, backward, Adam. An untrained score MLP stands in for a cached one (same cost). Prints
ms per step and member-steps per second. Compiled rows are timed after their compilation.
"""

from __future__ import annotations

import argparse
import platform

import torch
from bench_ensemble import rate  # the same timed step (noise, score, loss, backward, Adam)

from eqflow.models import ScoreModule
from eqflow.models.ensemble import ENSEMBLES
from eqflow.models.exact import ExactFlowModule
from eqflow.models.flow import EquilibriumFlowModule

LOSSES = {
    "exact (strain)": (ExactFlowModule, {}),
    "published, closed form": (
        EquilibriumFlowModule,
        dict(divergence="hutchinson", estimator="expected"),
    ),
}


def build(kind, members: int, compile_: bool, dim: int):
    cls, kw = LOSSES[kind]
    score = ScoreModule(dim=dim, t=0.2)
    if members == 1:
        return cls(score, dim, compile=compile_, **kw)
    return ENSEMBLES[cls](score, dim, seeds=list(range(members)), compile=compile_, **kw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--members", type=int, nargs="+", default=[1, 20])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--dim", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also the compiled rows")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(
        f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads, "
        f"batch {args.batch}, d {args.dim}"
    )
    print("| loss | members | compiled | ms/step | member-steps/s |\n|---|---|---|---|---|")
    for kind in LOSSES:
        for k in args.members:
            for compiled in [False, True] if args.compile else [False]:
                flow = build(kind, k, compiled, args.dim)
                shape = (args.batch, args.dim) if k == 1 else (k, args.batch, args.dim)
                x0 = torch.randn(shape)
                steps_per_s, _ = rate(flow, x0, args.steps, warmup=3 if compiled else 2, flops=0.0)
                ms = 1000 / steps_per_s
                print(
                    f"| {kind} | {k} | {'yes' if compiled else 'no'} | {ms:.1f} | "
                    f"{1000 * k / ms:.1f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
