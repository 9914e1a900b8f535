"""Cost of one training step against the dimension: the jet exact flow (flow=exact, ~d^4), the
scalable exact flow (flow=exact_lowrank: hollow low-rank A, Hutchinson strain) and the published
loss in closed form (flow=mlp_unique's), batch 256, on an energy score (score=energy) as the
exact flows use. A row stops for a flow once one step exceeds --budget seconds.

    python benchmarks/bench_exact_scaling.py [--dims 3 10 20 40 100] [--steps 5] [--budget 20]

One step = the batch noised, scored, the loss, backward, Adam (bench_ensemble.rate).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from bench_ensemble import rate

from eqflow.models import EnergyScoreModule
from eqflow.models.exact import ExactFlowModule
from eqflow.models.exact_lowrank import LowRankExactFlow
from eqflow.models.flow import EquilibriumFlowModule

FLOWS = {
    "jet exact (flow=exact)": (ExactFlowModule, {}),
    "low-rank exact (flow=exact_lowrank)": (LowRankExactFlow, {}),
    "published loss (flow=mlp_unique)": (
        EquilibriumFlowModule,
        dict(divergence="hutchinson", estimator="expected"),
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", type=int, nargs="+", default=[3, 10, 20, 40, 100])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds a step at most")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} threads")
    print("| flow | " + " | ".join(f"d = {d}" for d in args.dims) + " |")
    print("|---|" + "---|" * len(args.dims))
    for name, (cls, kw) in FLOWS.items():
        cells, stopped = [], False
        for d in args.dims:
            if stopped:
                cells.append("-")
                continue
            flow = cls(EnergyScoreModule(dim=d, t=0.2), d, **kw)
            x0 = torch.randn(args.batch, d)
            start = time.perf_counter()
            try:
                steps_per_s, _ = rate(flow, x0, args.steps, warmup=1, flops=0.0)
                cells.append(f"{1000 / steps_per_s:.1f}")
            except (RuntimeError, MemoryError) as exc:  # out of memory
                cells.append(f"failed ({type(exc).__name__})")
            stopped = time.perf_counter() - start > args.budget * (args.steps + 1)
        print(f"| {name} (ms/step) | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
