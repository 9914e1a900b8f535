"""Re-measuring finished runs (evaluate.py)."""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

from hydra.utils import instantiate
from omegaconf import OmegaConf

from eqflow.callbacks import EndOfFitMetric
from eqflow.results import read_metrics
from eqflow.runs import load_run

log = logging.getLogger(__name__)


def evaluate_run(run_dir: str | Path, output_dir: str | Path, loggers: list | None = None) -> dict:
    """Load a finished run and re-compute its end-of-fit metrics into ``output_dir``."""
    run = load_run(run_dir)
    output_dir = Path(output_dir)
    cfg = run.cfg.copy()
    cfg.paths.output_dir = str(output_dir)
    callbacks_cfg = OmegaConf.to_container(cfg.callbacks, resolve=True)
    trainer = SimpleNamespace(datamodule=run.datamodule, loggers=loggers or [], callbacks=[],
                              global_step=0, global_rank=0)
    for name, node in callbacks_cfg.items():
        if not node or "eqflow.callbacks" not in str(node.get("_target_", "")):
            continue
        callback = instantiate(node)
        if isinstance(callback, EndOfFitMetric):
            log.info("Measuring %s of %s", name, run_dir)
            callback.on_fit_end(trainer, run.flow)
    return read_metrics(output_dir)
