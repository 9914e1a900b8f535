"""The data stage of a run: the system a data config names, its snapshots (cached where
generating them is slow) and the cache key that identifies them (config plus file fingerprints)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from eqflow.data import Snapshots, SnapshotSystem
from eqflow.errors import ConfigError
from eqflow.io.cache import cached, plain_container

log = logging.getLogger(__name__)


def file_fingerprints(tree: Any) -> dict[str, str]:
    """sha256 of every existing file (or folder of files) a config names: an icon's or a data
    file's bytes, not just its path."""
    import hashlib

    found = {}
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list) else [tree]
    for value in values:
        if isinstance(value, (dict, list)):
            found.update(file_fingerprints(value))
        elif isinstance(value, str) and os.path.isfile(os.path.expanduser(value)):
            found[value] = hashlib.sha256(Path(value).expanduser().read_bytes()).hexdigest()
        elif (
            isinstance(value, str)
            and value not in (".", "")
            and os.path.isdir(os.path.expanduser(value))
        ):
            digest = hashlib.sha256()  # a folder of files (images): every name and its bytes
            for f in sorted(Path(value).expanduser().iterdir()):
                if f.is_file():
                    digest.update(f.name.encode() + b"\0" + f.read_bytes())
            found[value] = digest.hexdigest()
    return found


def data_key(cfg: DictConfig) -> dict:
    """What the cached snapshots depend on: the data config, its seed and the files it names."""
    data = plain_container(cfg.data)
    key = {"data": data, "seed": int(cfg.data_seed)}
    files = file_fingerprints(data)
    if files:
        key["files"] = files
    return key


def load_data(cfg: DictConfig) -> tuple[SnapshotSystem, Snapshots]:
    """Instantiate the system and draw (or load cached) snapshots from ``data_seed``."""
    system, snapshots, _ = load_data_with_info(cfg)
    return system, snapshots


def build_system(cfg: DictConfig) -> SnapshotSystem:
    """The data config's system (a file it reads is read and checked here)."""
    try:
        return instantiate(cfg.data)
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, ValueError) else exc
        raise ConfigError(f"cannot build data={cfg.data.get('_target_')}: {cause}") from exc


def load_data_with_info(
    cfg: DictConfig, system: SnapshotSystem | None = None
) -> tuple[SnapshotSystem, Snapshots, dict]:
    """:func:`load_data`, plus how the data came: generation time, cache path and hit."""
    system = system if system is not None else build_system(cfg)

    def build() -> dict:
        g = torch.Generator().manual_seed(int(cfg.data_seed))
        start = time.perf_counter()
        snaps = system.generate(g)
        seconds = time.perf_counter() - start
        log.info(
            "Generated %d snapshots of %s in %.1f s", len(snaps.x), type(system).__name__, seconds
        )
        return {**snaps.to_dict(), "generate_seconds": seconds}

    info = {}
    if getattr(system, "cache_data", False):
        record, path, hit = cached(
            "data", data_key(cfg), build, cfg.paths.cache_dir, validate=Snapshots.from_dict
        )
        info = {"data/cache_path": str(path), "data/cache_hit": hit}
    else:
        record = build()
    info["data/generate_seconds"] = record.get("generate_seconds")
    return system, Snapshots.from_dict(record), info
