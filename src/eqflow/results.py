"""The run's metrics.json (merged, written atomically) and logging to every logger."""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock


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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json_atomic(data: dict, path: str | os.PathLike) -> None:
    write_text_atomic(path, json.dumps(_jsonable(data), indent=2, sort_keys=True))


def read_metrics(run_dir: str | os.PathLike) -> dict:
    path = Path(run_dir) / "metrics.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON ({exc}); re-run evaluate.py on the run "
                         f"to recompute it") from exc


def update_metrics(run_dir: str | os.PathLike, values: dict) -> dict:
    """Merge ``values`` into ``run_dir/metrics.json`` and return the whole record (under a file
    lock, so two processes writing one run directory do not lose each other's values)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    with FileLock(str(Path(run_dir) / ".metrics.json.lock")):
        merged = read_metrics(run_dir)
        merged.update(_jsonable(values))
        write_json_atomic(merged, Path(run_dir) / "metrics.json")
    return merged


def scalars(values: dict) -> dict[str, float]:
    """The finite scalar entries of ``values`` (what loggers can chart)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def log_to_loggers(loggers, values: dict, step: int | None = None) -> None:
    row = scalars(values)
    for logger in loggers:
        if row:
            logger.log_metrics(row, step=step)
        if hasattr(logger, "experiment") and type(logger).__name__ == "WandbLogger":
            summary = logger.experiment.summary
            for k, v in row.items():
                summary[k] = v


def log_figure(loggers, key: str, path: str | os.PathLike) -> None:
    """Send a saved figure to every logger that takes images (W&B); it is on disk already."""
    for logger in loggers:
        if hasattr(logger, "log_image"):
            logger.log_image(key=key, images=[str(path)])


def log_video(loggers, key: str, path: str | os.PathLike) -> None:
    """Send a saved animation (GIF or MP4) to every W&B logger as a video."""
    for logger in loggers:
        if type(logger).__name__ == "WandbLogger":
            import wandb

            fmt = Path(path).suffix.lstrip(".") or "gif"
            logger.experiment.log({key: wandb.Video(str(path), format=fmt)})


def mean_std(values) -> tuple[float, float]:
    """Mean and sample std of the finite values (std 0 for one value, NaNs for none)."""
    xs = [float(x) for x in values if math.isfinite(float(x))]
    if not xs:
        return math.nan, math.nan
    m = sum(xs) / len(xs)
    return m, (math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else 0.0)
