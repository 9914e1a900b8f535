"""On-disk cache of expensive artefacts (datasets, score models), keyed by a config hash.

Writes are atomic (a temporary file in the same folder, then ``os.replace``); a file lock
makes concurrent jobs (a parallel sweep) build an entry once, and a complete entry is read
without one (a read-only cache works); every entry carries the sha256 of its contents, so an
unreadable, altered or mismatched entry is reported and rebuilt.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from omegaconf import DictConfig, OmegaConf

from eqflow.io.storage import CACHE_FOLDER, atomic_write

log = logging.getLogger(__name__)


class CorruptCacheError(RuntimeError):
    pass


def plain_container(node) -> Any:
    """A config node as plain Python containers (resolved): what cache keys are made of."""
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


def config_hash(obj: Any, length: int = 16) -> str:
    """A stable hash of a JSON-able object (dict keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def atomic_torch_save(obj: Any, path: str | os.PathLike, setting: str = CACHE_FOLDER) -> None:
    atomic_write(path, lambda f: torch.save(obj, f), binary=True, setting=setting)


def load_entry(path: Path, key: dict) -> Any:
    """Load a cache entry written by :func:`cached`; raise CorruptCacheError if unusable."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # truncated, not a torch file, unpicklable
        raise CorruptCacheError(
            f"cannot read cache file {path}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(record, dict) or not {"key", "payload", "sha256"} <= set(record):
        raise CorruptCacheError(
            f"cache file {path} is not an eqflow cache record (or one from before checksums)"
        )
    if record["key"] != json.loads(json.dumps(key, sort_keys=True, default=str)):
        raise CorruptCacheError(f"cache file {path} was written for another configuration")
    payload = record["payload"].numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != record["sha256"]:
        raise CorruptCacheError(f"cache file {path} does not match its checksum (altered on disk)")
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CorruptCacheError(f"cannot read the contents of {path}: {exc}") from exc


def _record(key: dict, value: Any) -> dict:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    payload = buffer.getvalue()
    # the serialised value travels as one uint8 tensor: torch stores tensors' bytes without a
    # check of its own, so the sha256 beside it is what catches an altered file
    return {
        "key": json.loads(json.dumps(key, sort_keys=True, default=str)),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }


def entry_path(kind: str, key: dict, root: str | os.PathLike) -> Path:
    """Where :func:`cached` keeps the entry for ``key``: ``root/kind/<hash(key)>.pt``."""
    return Path(root) / kind / f"{config_hash(key)}.pt"


_ABSENT = object()


def _read(kind: str, path: Path, key: dict, validate: Callable[[Any], None] | None) -> Any:
    """The entry's value, or _ABSENT when there is none or it is unusable (reported)."""
    if not path.exists():
        return _ABSENT
    try:
        value = load_entry(path, key)
        if validate is not None:
            validate(value)
    except Exception as exc:
        log.warning("Cached %s at %s is corrupt (%s); rebuilding it.", kind, path, exc)
        return _ABSENT
    log.info("Loaded cached %s from %s", kind, path)
    return value


def cached(
    kind: str,
    key: dict,
    build: Callable[[], Any],
    root: str | os.PathLike,
    validate: Callable[[Any], None] | None = None,
) -> tuple[Any, Path, bool]:
    """Return ``(value, path, hit)`` for the entry ``root/kind/<hash(key)>.pt``, building it once.

    ``validate(value)`` may raise to mark a loaded value unusable (it is then rebuilt).
    """
    path = entry_path(kind, key, root)
    found = _read(kind, path, key, validate)  # a complete entry (renamed into place): no lock
    if found is not _ABSENT:
        return found, path, True
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path) + ".lock")
        lock.acquire()
    except OSError as exc:
        raise OSError(
            f"cannot build the {kind} cache entry {path}: {exc}. The cache folder must "
            f"be writable to build an entry; point paths.cache_dir= (or "
            f"EQFLOW_CACHE_DIR) at a writable folder"
        ) from exc
    try:
        found = _read(kind, path, key, validate)  # another job may have built it meanwhile
        if found is not _ABSENT:
            return found, path, True
        path.unlink(missing_ok=True)
        log.info("Building %s (cache miss: %s)", kind, path)
        value = build()
        atomic_torch_save(_record(key, value), path)
        log.info("Cached %s at %s", kind, path)
        return value, path, False
    finally:
        lock.release()
