"""How much a Table 2 value depends on its start pattern: re-measure a finished Gray-Scott
run's training-free flow and random-kernel baseline (no re-weight baseline, for speed) from
the start patterns drawn by other seeds.

    python benchmarks/table2_start_patterns.py outputs/runs/gray_scott_maze/<time> --seeds 1 2 3
"""
from __future__ import annotations

import argparse

import torch

from eqflow.protocols import pick_pattern
from eqflow.protocols import pattern_fidelity
from eqflow.runs import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    run = load_run(args.run_dir)
    flow, dm = run.flow, run.data
    simulate = dm.simulator()
    for seed in args.seeds:
        g = torch.Generator().manual_seed(seed)
        x0 = pick_pattern(dm.x, g)
        with torch.no_grad():
            res = pattern_fidelity(flow, simulate, x0, generator=g, reweight=False)
        rand = torch.tensor(res.random)
        print(f"seed {seed}: training-free {res.best:.3f} (+ {res.plus:.3f} / - {res.minus:.3f}), "
              f"random {rand.mean():.3f} ({rand.std():.3f}), above mean + std: "
              f"{res.best > rand.mean() + rand.std()}", flush=True)


if __name__ == "__main__":
    main()
