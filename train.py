"""Train (or build) an equilibrium flow and measure it: `python train.py [experiment=...]`."""
import logging
import sys

import hydra
from omegaconf import DictConfig

from eqflow.errors import ConfigError, NonFiniteLossError, RunInterrupted
from eqflow.pipeline import train

log = logging.getLogger("eqflow")


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:

    try:
        result = train(cfg)
    except RunInterrupted as exc:
        log.error("%s", exc)
        sys.exit(143)  # 128 + SIGTERM, as a shell or Slurm reports a job killed by it
    except (ConfigError, NonFiniteLossError, FileNotFoundError, OSError) as exc:
        log.error("%s", exc)
        sys.exit(2)
    value = result.metrics.get("mmd/final")
    return float(value) if isinstance(value, (int, float)) else None


if __name__ == "__main__":
    main()
