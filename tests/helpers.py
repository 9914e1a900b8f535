"""Composing the train config outside of a Hydra app, with tiny settings."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

CONF = str(Path(__file__).resolve().parents[1] / "conf")

TINY = [
    "score.epochs=2",
    "trainer.max_epochs=2",
    "trainer.enable_progress_bar=false",
    "measure.lyapunov.steps=20",
    "measure.lyapunov.burn_in=0",
    "measure.mmd.steps=5",
    "measure.figures.steps=10",
    "measure.fidelity.n_points=64",
]

# a tiny experiment=alife run: a dozen-pixel icon on a 32-pixel canvas, a 1-epoch score
TINY_ALIFE = [
    "experiment=alife",
    "logger=none",
    "data.canvas=32",
    "data.icon_size=12",
    "data.n_samples=16",
    "score.epochs=1",
    "score.batch_size=8",
    "trainer.enable_progress_bar=false",
    "measure.creatures.scale=2",
    "measure.creatures.calibration=clean",  # a 1-epoch score denoises nothing
    "measure.creatures.frame_every=5",
]


def compose_train(overrides, tmp_path: Path | None = None, tiny: bool = True):
    extra = []
    if tmp_path is not None:
        extra = [
            f"paths.output_dir={tmp_path / 'run'}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            "name=test",
        ]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=(TINY if tiny else []) + extra + list(overrides))


# evaluate.py on a tiny sweep in seconds
CHEAP_EVAL = [
    "logger=none",
    "n_points=64",
    "n_baselines=2",
    "chaos.long_horizon=0",
    "chaos.settings.steps=20",
    "chaos.settings.burn_in=0",
    "mmd.steps=3",
    "mmd.n_points=32",
    "umap.enabled=false",  # numba compiles UMAP for ~20-50 s; test_sweeps checks the figure
]


# Gray-Scott "maze" survives on small grids; 32 x 32 is the smallest size the 3-level U-Net takes
# comfortably (divisible by 8).
TINY_PATTERNS = [
    "experiment=gray_scott_maze",
    "data.size=32",
    "data.n_samples=24",
    "data.steps=300",
    "score.epochs=2",
    "score.batch_size=8",
    "score.samples.every_n_epochs=1",
    "trainer.enable_progress_bar=false",
    "measure.patterns.steps=12",
    "measure.patterns.ema_until=8",
    "measure.patterns.n_draws=3",
    "measure.patterns.frame_every=4",
]


def cut_off_in_epoch(monkeypatch, epoch: int, key: str | None = None) -> None:
    """Make fits raise RuntimeError("power cut") at the end of ``epoch`` (0-based), before that
    epoch's checkpoint is written (Lightning runs ModelCheckpoint after the other callbacks);
    ``key`` limits it to the LossHistory of that loss. ``monkeypatch.undo()`` restores power."""
    from eqflow.callbacks import LossHistory

    record_loss = LossHistory.on_train_epoch_end

    def power_cut(self, trainer, module):
        if (key is None or self.key == key) and trainer.current_epoch == epoch:
            raise RuntimeError("power cut")
        record_loss(self, trainer, module)

    monkeypatch.setattr(LossHistory, "on_train_epoch_end", power_cut)


def signal_train_when(args: list[str], ready, sig: int, cwd: Path) -> tuple[int, str]:
    """Start ``python train.py *args``, send ``sig`` once ``ready()`` is true (5 min at most);
    returns the exit status and the output."""
    import os
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, str(Path(CONF).parent / "train.py"), *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "WANDB_MODE": "offline"},
    )
    deadline = time.time() + 300
    while not ready() and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    return proc.returncode, output


# one learned Lorenz flow on a short trajectory set, no study at the end
TINY_LORENZ = [
    "experiment=lorenz",
    "flow=mlp",
    "evaluate=false",  # one flow, no study
    "data.n_trajectories=2",
    "data.n_steps=400",
    "data.burn_in_steps=100",
]


def run_script(script: str, *args: str, cwd: Path, env: dict | None = None):
    """``python <script> *args`` from the repository root, W&B offline; the completed process
    with ``output`` (stdout then stderr: logs go to stdout, Hydra-time errors to stderr)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    done = subprocess.run(
        [sys.executable, str(Path(CONF).parent / script), *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=900,
        env=env,
    )
    done.output = done.stdout + done.stderr
    return done


def quartic_score(shape: tuple, dtype):
    """s = -grad E on images of ``shape`` (C, H, W) for E = x.P x / 2 + sum x^4 / 4: a
    non-Gaussian density whose Hessian varies and which no translation leaves alone."""
    import torch

    g = torch.Generator().manual_seed(1)
    d = shape[0] * shape[1] * shape[2]
    m = torch.randn(d, d, generator=g, dtype=dtype) / d**0.5
    prec = m @ m.T + 0.5 * torch.eye(d, dtype=dtype)
    return lambda x: -((x.flatten(1) @ prec).view(x.shape) + x**3)


def equilibrium_residual(field, score, x) -> float:
    """rms(div v + v.s) / rms(|v| |s|) over images ``x`` (B, C, H, W): how far ``field`` is from
    div(p v) = 0 for the density of ``score``, div v by autograd's full Jacobian."""
    import torch

    d = x[0].numel()
    div = torch.stack(
        [
            torch.autograd.functional.jacobian(lambda z: field(z[None])[0], xi)
            .reshape(d, d)
            .trace()
            for xi in x
        ]
    )
    v, s = field(x), score(x)
    residual = div + (v * s).flatten(1).sum(-1)
    scale = (v.flatten(1).norm(dim=-1) * s.flatten(1).norm(dim=-1)).pow(2).mean().sqrt()
    return float(residual.pow(2).mean().sqrt() / scale)
