"""Composing the train config outside of a Hydra app, with tiny settings."""
from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir

CONF = str(Path(__file__).resolve().parents[1] / "conf")

TINY = ["score.epochs=2", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
        "callbacks.lyapunov.steps=20", "callbacks.lyapunov.burn_in=0",
        "callbacks.mmd.steps=5", "callbacks.figures.steps=10", "callbacks.fidelity.n_points=64"]


def compose_train(overrides, tmp_path: Path | None = None, tiny: bool = True):
    extra = []
    if tmp_path is not None:
        extra = [f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
                 "name=test"]
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=(TINY if tiny else []) + extra + list(overrides))
