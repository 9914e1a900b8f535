"""The largest Lyapunov exponent eqflow.metrics.max_lyapunov measures on the true field of dysts
systems, against the published values (eqflow.data.dysts_systems.PUBLISHED_LYAPUNOV).

    python scripts/validate_lyapunov.py [--systems Lorenz Rossler Chen] [--periods 200]

8 trajectories from the system's snapshots, RK4 at the data's step (150 per period), twins
renormalised every step, ``--periods`` dominant periods after a burn-in of 20.
"""

import argparse
import time

import torch

from eqflow.data import DystsSystem
from eqflow.metrics.lyapunov import max_lyapunov


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["Lorenz", "Rossler", "Chen"])
    parser.add_argument("--periods", type=float, default=200.0)
    args = parser.parse_args()
    print("| system | measured | published | difference | time units | seconds |")
    print("|---|---|---|---|---|---|")
    for name in args.systems:
        system = DystsSystem(name, n_trajectories=8, n_steps=10)
        g = torch.Generator().manual_seed(0)
        snaps = system.generate(g)
        starts = snaps.x[::10][:8].double() * snaps.scale.double() + snaps.shift.double()
        per_period = system.period / system.dt
        t = time.perf_counter()
        res = max_lyapunov(
            system.vector_field,
            starts,
            system.dt,
            int(args.periods * per_period),
            burn_in=int(20 * per_period),
            generator=g,
        )
        ref = system.vector_field.reference_lyapunov
        pub = f"{ref[0]:.4f}" if ref else "—"
        diff = f"{(res['lyapunov'] - ref[0]) / ref[0]:+.1%}" if ref else "—"
        print(
            f"| {name} | {res['lyapunov']:.4f} | {pub} | {diff} | "
            f"{args.periods * system.period:.0f} | {time.perf_counter() - t:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
