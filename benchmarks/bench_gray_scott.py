"""Gray-Scott simulator speed: cell updates per second of eqflow's step (torch.roll Laplacian,
fused update) beside a straightforward nn.Conv2d-Laplacian implementation, in one run.

    python benchmarks/bench_gray_scott.py [--batch 64] [--size 128] [--steps 50]
"""

from __future__ import annotations

import argparse
import time

import torch

from eqflow.data.gray_scott import GrayScott, initial_state


class ConvGrayScott(torch.nn.Module):
    """The reference: the same Euler step with a depthwise 3x3 Laplacian convolution."""

    def __init__(self, gs: GrayScott):
        super().__init__()
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.conv = torch.nn.Conv2d(
            2, 2, 3, padding=1, padding_mode="circular", groups=2, bias=False
        )
        with torch.no_grad():
            self.conv.weight.copy_(lap.expand(2, 1, 3, 3))
        self.gs = gs

    @torch.no_grad()
    def step(self, x: torch.Tensor) -> torch.Tensor:
        lap = self.conv(x)
        u, v = x[:, 0], x[:, 1]
        uvv = u * v * v
        du = self.gs.du * lap[:, 0] - uvv + self.gs.feed * (1 - u)
        dv = self.gs.dv * lap[:, 1] + uvv - (self.gs.feed + self.gs.kill) * v
        return (x + torch.stack([du, dv], 1)).clamp(0, 1)


def rate(step, x, steps):
    for _ in range(3):
        x = step(x)
    start = time.perf_counter()
    for _ in range(steps):
        x = step(x)
    seconds = time.perf_counter() - start
    return steps * x.shape[0] * x.shape[-1] * x.shape[-2] / seconds, x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    gs = GrayScott.preset("waves")
    x0 = initial_state(args.batch, args.size, torch.Generator().manual_seed(0))
    ours, a = rate(torch.no_grad()(gs.step), x0, args.steps)
    ref, b = rate(ConvGrayScott(gs).step, x0, args.steps)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
        f"{args.size}x{args.size}, {args.steps} steps"
    )
    print("| implementation | cell updates/s |\n|---|---|")
    print(f"| eqflow (roll Laplacian) | {ours:.3e} |")
    print(f"| nn.Conv2d Laplacian (circular padding) | {ref:.3e} |")
    print(f"same states: max |difference| = {(a - b).abs().max():.2e}")


if __name__ == "__main__":
    main()
