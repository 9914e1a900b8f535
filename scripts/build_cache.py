"""Build the data and score-model cache entries of a config without fitting or measuring a flow:
``python scripts/build_cache.py experiment=gray_scott_maze [overrides...]``. A later
``train.py`` with the same data and score settings starts from the cache."""

import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import open_dict

from eqflow.stages.data import load_data
from eqflow.stages.score import load_score

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch, open_dict(cfg):
        cfg.paths.output_dir = scratch
        system, snapshots = load_data(cfg)
        print(
            f"data: {tuple(snapshots.x.shape)} in {time.perf_counter() - start:.0f} s", flush=True
        )
        _, info = load_score(cfg, system, snapshots)
    print(
        f"score: trained in {info.get('train_seconds', 0):.0f} s; total "
        f"{time.perf_counter() - start:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
