"""Seconds per training step of the alife U-Net (widths 16-32-64, batch 16 of 3 x 32 x 32) in
float32 and under bfloat16 autocast, one thread: whether bf16-mixed pays on this CPU.

    python benchmarks/bench_unet_precision.py
"""

from __future__ import annotations

import time

import torch

from eqflow.models.image_score import ImageScoreModule
from eqflow.stages.score_cache import bfloat16_is_fast


def step_seconds(model, x, optimiser, bf16: bool, repeats: int = 4) -> float:
    times = []
    for _ in range(repeats + 1):  # the first step warms up
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.diffusion_loss(x)
        loss.backward()
        optimiser.step()
        optimiser.zero_grad()
        times.append(time.perf_counter() - start)
    return sorted(times[1:])[len(times[1:]) // 2]


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = ImageScoreModule(
        channels=3, block_out_channels=[16, 32, 64], norm_num_groups=8, train_timesteps=[0, 20]
    )
    x = torch.rand(16, 3, 32, 32) * 2 - 1
    optimiser = torch.optim.AdamW(model.parameters(), 1e-3)
    print(f"bfloat16 native here: {bfloat16_is_fast()}")
    for bf16 in (False, True):
        name = "bf16-mixed" if bf16 else "float32"
        print(f"{name}: {step_seconds(model, x, optimiser, bf16):.3f} s a step (median of 4)")


if __name__ == "__main__":
    main()
