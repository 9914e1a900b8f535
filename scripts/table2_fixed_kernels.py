"""Which 1 x 1 kernels match a Gray-Scott run's simulator: the Table 2 SDE (same Langevin term,
same start pattern) with fixed unit-norm kernels P in v = P s, reported as signed cosines to the
simulator's 20-step change. The skew D (both signs) against I / sqrt 2 (following the score) tells
whether the pattern's motion circulates or relaxes (benchmarks/BENCHMARKS.md, issue 4).

    python benchmarks/table2_fixed_kernels.py outputs/runs/gray_scott_maze/<time>
"""

from __future__ import annotations

import argparse

import torch

from eqflow.metrics.fidelity import cosine
from eqflow.models.baselines import random_kernel_drift
from eqflow.protocols import pick_pattern
from eqflow.protocols.langevin import langevin_representation
from eqflow.runs import load_run

R = 2**-0.5
KERNELS = {
    "D (gamma = +1)": [[0, R], [-R, 0]],
    "-D": [[0, -R], [R, 0]],
    "I / sqrt 2": [[R, 0], [0, R]],
    "-I / sqrt 2": [[-R, 0], [0, -R]],
    "diag(1, -1) / sqrt 2": [[R, 0], [0, -R]],
    "swap / sqrt 2": [[0, R], [R, 0]],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--seed", type=int, default=0, help="start pattern and SDE noise")
    args = parser.parse_args()
    run = load_run(args.run_dir)
    flow, dm = run.flow, run.data
    if flow.score_model.hparams.get("channels", 2) != 2:
        raise SystemExit("the fixed kernels are 2 x 2: run this on a Gray-Scott (2-channel) run")
    simulate = dm.simulator()
    g = torch.Generator().manual_seed(args.seed)
    x0 = pick_pattern(dm.x, g)
    protocol = run.cfg.measure.patterns  # the run's own Table 2 settings
    truth = simulate(x0, protocol.truth_steps) - x0
    kernels = torch.tensor(list(KERNELS.values()), dtype=torch.float32)
    with torch.no_grad():
        rec = langevin_representation(
            random_kernel_drift(kernels),
            flow.score,
            x0.expand(len(kernels), -1, -1, -1).clone(),
            eta=protocol.eta,
            dt=protocol.dt,
            steps=protocol.ema_until,
            ema=protocol.ema,
            ema_until=protocol.ema_until,
            generator=g,
        )
    for name, c in zip(KERNELS, cosine(rec.representation, truth).tolist()):
        print(f"{name:22s} {c:+.3f}")


if __name__ == "__main__":
    main()
