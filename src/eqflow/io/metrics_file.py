"""A run's metrics.json (merged under a file lock, written atomically) and the text and JSON
files of runs and reports."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock

from eqflow.io.run_folders import ENSEMBLE_MARKER
from eqflow.io.storage import atomic_write


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder and a rename."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def write_json_atomic(data: dict, path: str | os.PathLike) -> None:
    write_text_atomic(path, json.dumps(_jsonable(data), indent=2, sort_keys=True))


def ensemble_member_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The metrics of every member of the ensemble run in ``run_dir`` (none for a run that is not
    an ensemble)."""
    marker = Path(run_dir) / ENSEMBLE_MARKER
    if not marker.exists():
        return []
    return [read_metrics(Path(run_dir) / f) for f in json.loads(marker.read_text())["members"]]


def read_metrics(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}). Fix: move it aside (mv {path} "
            f"{path}.corrupt); evaluate.py then measures the run again from its "
            f"flow.pt"
        ) from exc


def update_metrics(run_dir: str | os.PathLike, values: dict) -> dict:
    """Merge ``values`` into ``run_dir/metrics.json`` and return the whole record (under a file
    lock, so two processes writing one run directory do not lose each other's values)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(run_dir) / ".metrics.json.lock")):
        merged = read_metrics(run_dir)
        merged.update(_jsonable(values))
        write_json_atomic(merged, Path(run_dir) / "metrics.json")
    return merged
