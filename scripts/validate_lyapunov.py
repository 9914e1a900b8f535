"""The largest Lyapunov exponent eqflow.metrics.max_lyapunov measures on the true field of dysts
systems, against the published values (eqflow.data.dysts_systems.PUBLISHED_LYAPUNOV).

    python scripts/validate_lyapunov.py [--systems Lorenz Rossler Chen] [--periods 200]
    python scripts/validate_lyapunov.py --lorenz96 10 20 40 [--time 200]


8 trajectories from the system's snapshots, RK4 at the data's step (150 per period), twins
renormalised every step, ``--periods`` dominant periods after a burn-in of 20.
"""

import argparse
import time

import torch

from eqflow.data import DystsSystem, Lorenz96, ODESystem
from eqflow.metrics.lyapunov import max_lyapunov

# Lorenz-96 at F = 8: the largest exponent for N = 40 (Lorenz 1996; Karimi and Paul 2010: 1.68)
PUBLISHED_LORENZ96 = {40: 1.7}


def lorenz96_table(sizes: list[int], time_units: float) -> None:
    """Lorenz-96 (F = 8) of each size: 8 starts on the attractor (after 20 time units), RK4 at
    dt = 0.01, twins renormalised every step, ``time_units`` after a burn-in of 20."""
    print("| N | measured | published | time units | seconds |")
    print("|---|---|---|---|---|")
    for n in sizes:
        field = Lorenz96(8.0)
        system = ODESystem(field, n, n_trajectories=8, n_steps=20, burn_in_steps=2000)
        g = torch.Generator().manual_seed(0)
        snaps = system.generate(g)
        starts = (snaps.x.double() * snaps.scale.double() + snaps.shift.double())[-8:]
        t = time.perf_counter()
        res = max_lyapunov(field, starts, 0.01, int(time_units / 0.01), burn_in=2000, generator=g)
        pub = PUBLISHED_LORENZ96.get(n)
        print(
            f"| {n} | {res['lyapunov']:.3f} | {pub if pub else '—'} | {time_units:.0f} | "
            f"{time.perf_counter() - t:.0f} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["Lorenz", "Rossler", "Chen"])
    parser.add_argument("--periods", type=float, default=200.0)
    parser.add_argument("--lorenz96", type=int, nargs="+", help="Lorenz-96 sizes N instead")
    parser.add_argument("--time", type=float, default=200.0, help="Lorenz-96 time units")
    args = parser.parse_args()
    if args.lorenz96:
        return lorenz96_table(args.lorenz96, args.time)
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
