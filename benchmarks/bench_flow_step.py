"""Flow-training speed: optimiser steps per second at batch 2048 on Lorenz-sized data (d = 3),
exact divergence beside the published K = 10 Hutchinson estimator (sampled and in closed
form), in one run.

    python benchmarks/bench_flow_step.py [--batch 2048] [--steps 60] [--device cpu]

One step = noise the batch, score it (frozen score MLP), the continuity loss with its
divergence, backward, Adam. The score network's weights do not change the cost, so an
untrained one stands in for a cached model.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from eqflow.models import EquilibriumFlowModule, ScoreModule


def steps_per_second(
    flow: EquilibriumFlowModule, x0: torch.Tensor, steps: int, warmup: int = 5
) -> float:
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    flow.train()

    def step():
        x = flow.score_model.noise(x0)
        with torch.no_grad():
            s = flow.score(x)
        loss = flow.continuity_loss(x, s)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    if x0.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if x0.is_cuda:
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--dim", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    x0 = torch.randn(args.batch, args.dim, device=device)
    variants = {
        "exact": dict(divergence="exact"),
        "hutchinson K=10 (gaussian, squared)": dict(divergence="hutchinson", n_probes=10),
        "hutchinson K=10 (gaussian, expected)": dict(
            divergence="hutchinson", n_probes=10, estimator="expected"
        ),
    }
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, device {device}, batch {args.batch}, d {args.dim}"
    )
    print("| divergence | steps/s | ms/step |\n|---|---|---|")
    for name, kw in variants.items():
        score = ScoreModule(dim=args.dim, t=0.2).to(device)
        flow = EquilibriumFlowModule(score, dim=args.dim, **kw).to(device)
        rate = steps_per_second(flow, x0, args.steps)
        print(f"| {name} | {rate:.1f} | {1000 / rate:.1f} |")


if __name__ == "__main__":
    main()
