"""Evaluate finished runs.

python evaluate.py sweep=<multirun dir or run dir>   the study's tables, figures, report.md
python evaluate.py run=<run dir>                     re-compute one run's end-of-fit metrics
"""

import json
import logging
import sys

import hydra
from omegaconf import DictConfig

from eqflow.compat import renamed_override_message
from eqflow.config import EVALUATE_RULES, validate
from eqflow.errors import ConfigError, RunInterrupted
from eqflow.evaluation import evaluate_run, evaluate_sweep
from eqflow.io.interrupts import stage, stop_on_signals
from eqflow.runs import RunLoadError

log = logging.getLogger("eqflow")


def evaluate(cfg: DictConfig) -> int:
    """The exit status: 0, or 1 when ``strict=true`` and runs or jobs were left out."""
    validate(cfg, EVALUATE_RULES)
    if cfg.run is not None:
        metrics = evaluate_run(cfg.run, cfg.paths.output_dir, cfg.paths.get("cache_dir"))
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        print(json.dumps(scalars, indent=2, sort_keys=True))
        log.info("Metrics written to %s/metrics.json", cfg.paths.output_dir)
        return 0
    summary = evaluate_sweep(cfg)
    print(open(summary["headline"]).read())
    if "chaos" in summary:
        print(json.dumps(summary["chaos"], indent=2))
    if summary["failed"] and cfg.strict:
        log.error(
            "strict=true: %d runs or jobs were left out (listed above and in report.md)",
            len(summary["failed"]),
        )
        return 1
    return 0


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    if (cfg.sweep is None) == (cfg.run is None):
        log.error(
            "pass exactly one of sweep=<multirun or run dir> (the study) or run=<run dir> "
            "(re-measure one run)"
        )
        sys.exit(2)
    with (
        stop_on_signals(),
        stage(
            "evaluating",
            "the runs are untouched and nothing of the "
            "report is half-written; run the same command again",
        ),
    ):
        try:
            code = evaluate(cfg)
        except RunInterrupted as exc:
            log.error("%s", exc)
            sys.exit(exc.exit_code)
        except (RunLoadError, ConfigError, OSError, RuntimeError, ValueError) as exc:
            log.error("%s", exc)
            sys.exit(2)
    sys.exit(code)


if __name__ == "__main__":
    if message := renamed_override_message(sys.argv[1:]):
        sys.exit(f"Error: {message}")
    main()
