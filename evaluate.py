"""Evaluate finished runs.

    python evaluate.py sweep=<multirun dir or run dir>   the study's tables, figures, report.md
    python evaluate.py run=<run dir>                     re-compute one run's end-of-fit metrics
"""
import json
import logging
import sys

import hydra
from omegaconf import DictConfig

from eqflow.errors import ConfigError
from eqflow.evaluation import evaluate_run, evaluate_sweep
from eqflow.runs import RunLoadError

log = logging.getLogger("eqflow")



@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    if (cfg.sweep is None) == (cfg.run is None):
        log.error("pass exactly one of sweep=<multirun or run dir> (the study) or run=<run dir> "
                  "(re-measure one run)")
        sys.exit(2)
    try:
        if cfg.run is not None:
            metrics = evaluate_run(cfg.run, cfg.paths.output_dir, cfg.paths.get("cache_dir"))
            scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
            print(json.dumps(scalars, indent=2, sort_keys=True))
            log.info("Metrics written to %s/metrics.json", cfg.paths.output_dir)
        else:
            summary = evaluate_sweep(cfg)
            print(open(summary["headline"]).read())
            if "chaos" in summary:
                print(json.dumps(summary["chaos"], indent=2))
    except (RunLoadError, ConfigError, FileNotFoundError, RuntimeError, ValueError) as exc:
        log.error("%s", exc)
        sys.exit(2)


if __name__ == "__main__":
    main()
