"""Speed of the training-free image SDE: Heun steps per second for one 2 x 128 x 128 pattern
on this machine, with the published U-Net (widths 16, 32, 64) and the CPU-quick one (8, 16, 32).

Each Heun step evaluates the score twice (predictor and corrector); v = D s reuses that score.

    python benchmarks/bench_sde.py [--size 128] [--steps 20] [--threads N]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from eqflow.dynamics import sde_heun
from eqflow.models import ImageScoreModule, TrainingFreeFlow


def heun_steps_per_second(widths, groups, size, steps) -> float:
    torch.manual_seed(0)
    score = ImageScoreModule(2, block_out_channels=widths, norm_num_groups=groups).eval()
    flow = TrainingFreeFlow(score, dim=2, kernel="gamma", spatial=True).eval()
    x0 = torch.rand(1, 2, size, size) * 2 - 1
    g = torch.Generator().manual_seed(0)

    def run(n):
        return sde_heun(
            lambda x, s: flow.apply_D(s),
            flow.score,
            x0,
            0.01,
            n,
            0.1,
            generator=g,
            drift_from_score=True,
        )

    run(2)  # warm-up
    start = time.perf_counter()
    run(steps)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, one 2 x {args.size} x {args.size} pattern"
    )
    for name, widths, groups in [
        ("published U-Net (16, 32, 64)", (16, 32, 64), 8),
        ("CPU-quick U-Net (8, 16, 32)", (8, 16, 32), 4),
    ]:
        rate = heun_steps_per_second(widths, groups, args.size, args.steps)
        print(
            f"{name}: {rate:.1f} Heun steps/s ({1000 / rate:.0f} ms per step, 2 score "
            f"evaluations each)"
        )


if __name__ == "__main__":
    main()
