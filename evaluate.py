"""Re-compute and print the metrics of a finished run: `python evaluate.py run=<run dir>`."""
import json
import logging
import sys

import hydra
from omegaconf import DictConfig

log = logging.getLogger("eqflow")


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from eqflow.evaluation import evaluate_run
    from eqflow.runs import RunLoadError

    try:
        metrics = evaluate_run(cfg.run, cfg.paths.output_dir)
    except RunLoadError as exc:
        log.error("%s", exc)
        sys.exit(2)
    scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
    print(json.dumps(scalars, indent=2, sort_keys=True))
    log.info("Metrics written to %s/metrics.json", cfg.paths.output_dir)


if __name__ == "__main__":
    main()
