"""Flow-ensemble throughput: member-steps per second at batch 2048 on Lorenz-sized data (d = 3)
for an ensemble of K flows trained as one model (K = 1, 4, 20, 100), beside K separate
single-flow processes run two at a time, with the arithmetic rate reached (GFLOP/s) beside a
plain matrix multiply's on this machine; all in one run.

    python benchmarks/bench_ensemble.py [--members 1 4 20 100] [--steps 20] [--device cpu]

One step = each member's batch noised (its own generator), scored (frozen score MLP), the
continuity loss with its divergence, backward, Adam: EnsembleFlowModule.loss_parts and the
single flow's, as the fits run them (without Lightning's loop around them).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from eqflow.models import EquilibriumFlowModule, ScoreModule
from eqflow.models.ensemble import EnsembleFlowModule


def make_flow(members: int, settings: dict, device: torch.device):
    score = ScoreModule(dim=3, t=0.2).to(device)
    if members == 0:  # a single flow, as one run trains it
        return EquilibriumFlowModule(score, 3, **settings).to(device)
    return EnsembleFlowModule(score, 3, seeds=list(range(members)), **settings).to(device)


def batch(flow, size: int, device) -> torch.Tensor:
    k = getattr(flow, "n_members", 0)
    return torch.randn(*((k,) if k else ()), size, 3, device=device)


def flops_per_step(flow, x0: torch.Tensor) -> float:
    """FLOPs of one eager step (matrix products; a compiled step does the same arithmetic)."""
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    counter = FlopCounterMode(display=False)
    with counter:
        loss = flow.loss_parts(x0)["loss"].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return float(counter.get_total_flops())


def rate(
    flow, x0: torch.Tensor, steps: int, warmup: int = 3, flops: float | None = None
) -> tuple[float, float]:
    """(steps per second, FLOPs per step)."""
    opt = torch.optim.Adam(flow.parameters(), lr=1e-3)
    flow.train()
    if flops is None:
        flops = flops_per_step(flow, x0)

    def step():
        loss = flow.loss_parts(x0)["loss"].sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if x0.is_cuda else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps / (time.perf_counter() - start), flops


def matmul_gflops(device: torch.device, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def separate_processes(settings: dict, steps: int, batch_size: int) -> float:
    """Member-steps per second of single-flow processes two at a time (one thread each)."""
    code = (
        f"import torch, json, sys; sys.argv=['x']; torch.set_num_threads(1);"
        f"from benchmarks.bench_ensemble import make_flow, batch, rate;"
        f"f = make_flow(0, {settings!r}, torch.device('cpu'));"
        f"print(json.dumps(rate(f, batch(f, {batch_size}, 'cpu'), {steps})))"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
        for _ in range(2)
    ]
    rates = [json.loads(p.communicate()[0].strip().splitlines()[-1])[0] for p in procs]
    del start
    return sum(rates)


def in_fresh_process(
    members: int, settings: dict, steps: int, batch_size: int, flops: float
) -> float:
    """Steps per second of one configuration in a process of its own (torch.compile keeps a
    cache per function across modules; a fresh process times each compiled ensemble as a run
    meets it, after its compilation)."""
    code = (
        f"import torch, json; from benchmarks.bench_ensemble import make_flow, batch, rate;"
        f"f = make_flow({members}, {settings!r}, torch.device('cpu'));"
        f"print(json.dumps(rate(f, batch(f, {batch_size}, 'cpu'), {steps}, flops={flops})))"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, nargs="+", default=[1, 4, 20, 100])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--divergence", default="exact", choices=["exact", "hutchinson"])
    parser.add_argument("--estimator", default="squared", choices=["squared", "expected"])
    parser.add_argument(
        "--compile",
        action="store_true",
        help="also time the ensembles with flow.model.compile=true",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    device = torch.device(args.device)
    settings = {"divergence": args.divergence, "estimator": args.estimator}
    peak = matmul_gflops(device)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, device {device}, batch {args.batch}, d 3, "
        f"divergence {args.divergence}; 2048^3 matmul: {peak:.1f} GFLOP/s"
    )
    print("| training | member-steps/s | vs separate processes | GFLOP/s | share of matmul |")
    print("|---|---|---|---|---|")
    base = None
    if device.type == "cpu":
        base = separate_processes(settings, args.steps, args.batch)
        print(f"| single-flow processes, two at a time (1 thread each) | {base:.1f} | 1.00 | | |")
    single = make_flow(0, settings, device)
    steps, flops = rate(single, batch(single, args.batch, device), args.steps)
    print(
        f"| one single flow in this process | {steps:.1f} | "
        f"{steps / base if base else float('nan'):.2f} | {steps * flops / 1e9:.1f} | "
        f"{steps * flops / 1e9 / peak:.1%} |"
    )
    for compiled in [False, True] if args.compile else [False]:
        for k in args.members:
            x0 = batch(make_flow(k, settings, device), args.batch, device)
            flops = flops_per_step(make_flow(k, settings, device), x0)
            n_steps = max(3, args.steps // max(1, k // 10))
            if compiled and device.type == "cpu":
                steps = in_fresh_process(
                    k, {**settings, "compile": True}, n_steps, args.batch, flops
                )
            else:
                flow = make_flow(k, {**settings, "compile": compiled}, device)
                steps, flops = rate(flow, x0, n_steps, flops=flops)
                del flow
            member_steps = steps * k
            name = f"ensemble K = {k}" + (", compiled" if compiled else "")
            print(
                f"| {name} | {member_steps:.1f} | "
                f"{member_steps / base if base else float('nan'):.2f} | "
                f"{steps * flops / 1e9:.1f} | {steps * flops / 1e9 / peak:.1%} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
