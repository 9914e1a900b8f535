"""Table 2 evaluation time, before and after batching, for S = 1 and S = 8 start patterns, in one
run: "one group at a time" runs each SDE of a start separately, as the protocol did before
(+D, -D, the 10 random kernels, the 10 redrawn networks), start after start; "batched" runs
every SDE of up to ``start_batch`` starts as one batched SDE (eqflow.protocols.pattern_fidelity).
Both draw the same randomness in the same order, so they give the same numbers (printed).

    python benchmarks/bench_table2.py [--starts 1 8] [hydra overrides ...]

The overrides pick the preset and its size; the default is a reduced Gray-Scott "waves" grid
(32 x 32, a 1-epoch score model: the timing does not depend on the score's quality), so that the
slow path at S = 8 fits in minutes on a laptop CPU; pass e.g. ``data.size=96 data.n_samples=256
data.steps=3000 score.epochs=40`` for the CPU-quick preset (about 5 minutes a start on one core).
Numbers come from the data and score caches (built on first use).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from eqflow.data import SnapshotData
from eqflow.metrics.fidelity import abs_cosine
from eqflow.models.baselines import (
    StackedNetworks,
    matched_norm,
    random_kernel_drift,
    random_kernels,
    redrawn_network,
)
from eqflow.protocols.langevin import langevin_representation
from eqflow.protocols.start_patterns import StartPatterns
from eqflow.protocols.table2 import pattern_fidelity
from eqflow.stages.building import build_flow
from eqflow.stages.data import load_data
from eqflow.stages.score import load_score

CONF = str(Path(__file__).resolve().parents[1] / "conf")
DEFAULT = [
    "experiment=gray_scott_waves",
    "data.size=32",
    "data.n_samples=24",
    "data.steps=300",
    "score.epochs=1",
    "trainer.enable_progress_bar=false",
]


def one_group_at_a_time(flow, simulate, pool, n_starts, g, p) -> list[float]:
    """The protocol before batching: every SDE on its own, start after start."""
    values = []
    for _ in range(n_starts):
        x0 = pool.draw()
        truth = simulate(x0, p.truth_steps) - x0
        kw = dict(eta=p.eta, dt=p.dt, ema=p.ema, ema_until=p.ema_until, generator=g)
        plus = langevin_representation(
            lambda x, s: flow.apply_D(s), flow.score, x0, steps=p.steps, **kw
        )
        minus = langevin_representation(
            lambda x, s: -flow.apply_D(s), flow.score, x0, steps=p.ema_until, **kw
        )
        batch = x0.expand(p.n_draws, *x0.shape[1:]).clone()
        rand = langevin_representation(
            random_kernel_drift(random_kernels(p.n_draws, x0.shape[1], g)),
            flow.score,
            batch,
            steps=p.ema_until,
            **kw,
        )
        nets = StackedNetworks(
            [redrawn_network(flow.score_model.network, g) for _ in range(p.n_draws)]
        )
        rew = langevin_representation(
            matched_norm(lambda x: flow.score_model.score(x, network=nets), x0.shape[1] ** -0.5),
            flow.score,
            batch,
            steps=p.ema_until,
            **kw,
        )
        values.append(
            [float(abs_cosine(r.representation, truth).mean()) for r in (plus, minus, rand, rew)]
        )
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--starts", type=int, nargs="+", default=[1, 8])
    args, overrides = parser.parse_known_args()
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[*DEFAULT, *overrides])
    with tempfile.TemporaryDirectory() as scratch, open_dict(cfg):
        cfg.paths.output_dir = scratch
        system, snapshots = load_data(cfg)
        score, _ = load_score(cfg, system, snapshots)
    flow = build_flow(cfg, score, snapshots.x).eval()
    data = SnapshotData(system, snapshots)
    simulate = data.simulator()
    p = instantiate(cfg.measure.patterns)
    print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads; "
        f"patterns {tuple(snapshots.x.shape)}; {p.n_draws} + {p.n_draws} draws per start; "
        f"start_batch {p.start_batch}"
    )
    print("| S | one group at a time (s) | batched (s) | speed-up | largest difference |")
    print("|---|---|---|---|---|")
    for n in args.starts:
        with torch.no_grad():
            t0 = time.perf_counter()
            g = torch.Generator().manual_seed(0)
            before = one_group_at_a_time(flow, simulate, StartPatterns(data.x, g), n, g, p)
            t1 = time.perf_counter()
            g = torch.Generator().manual_seed(0)
            res = pattern_fidelity(
                flow,
                simulate,
                StartPatterns(data.x, g),
                n_starts=n,
                generator=g,
                eta=p.eta,
                dt=p.dt,
                steps=p.steps,
                ema=p.ema,
                ema_until=p.ema_until,
                truth_steps=p.truth_steps,
                n_draws=p.n_draws,
                start_batch=p.start_batch,
                display=True,
                frame_every=0,
            )
            t2 = time.perf_counter()
        after = [
            [s.plus, s.minus, sum(s.random) / len(s.random), sum(s.reweight) / len(s.reweight)]
            for s in res.starts
        ]
        diff = max(abs(a - b) for ra, rb in zip(before, after) for a, b in zip(ra, rb))
        print(
            f"| {n} | {t1 - t0:.1f} | {t2 - t1:.1f} | {(t1 - t0) / (t2 - t1):.2f}x | {diff:.1e} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
