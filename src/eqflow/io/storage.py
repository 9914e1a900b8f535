"""Every file eqflow writes goes through :func:`atomic_write`: a temporary file in the same folder,
flushed to disk, then renamed over the target, so a reader sees the old file or the new one and a
crash leaves no partial file. A failed write (full disk, read-only or forbidden folder) becomes a
:class:`StorageError` that names the path and the setting that moves it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

from eqflow.errors import StorageError
from eqflow.io.interrupts import signals_deferred

RUN_FOLDER = "hydra.run.dir=<another folder>"
CACHE_FOLDER = "paths.cache_dir=<another folder>"


def _is_write_failure(exc: BaseException) -> bool:
    """torch.save reports a failed write as a RuntimeError from its C++ writer."""
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("enforce fail" in text or "write" in text)


def atomic_write(
    path: str | os.PathLike,
    write: Callable[[IO], None],
    binary: bool = True,
    setting: str = RUN_FOLDER,
) -> Path:
    """Write ``path`` by ``write(file)`` through a temporary file and a rename."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise StorageError.from_os_error(exc, path, setting) from exc
    try:
        with signals_deferred():  # a SIGTERM mid-write stops the run once the file is whole
            with os.fdopen(fd, "wb" if binary else "w") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise StorageError.from_os_error(exc, path, setting) from exc
        if _is_write_failure(exc):
            raise StorageError(
                f"cannot write {path}: the write failed ({exc}; a full disk?). "
                f"Nothing partial was left there. Fix: free space, or write "
                f"elsewhere with {setting}"
            ) from exc
        raise
    return path


def writable_folder(folder: str | os.PathLike, setting: str = RUN_FOLDER) -> Path:
    """Create ``folder`` if needed; a StorageError naming it if it cannot be written to."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StorageError.from_os_error(exc, folder, setting) from exc
    if not os.access(folder, os.W_OK):
        raise StorageError.from_os_error(PermissionError(13, "permission denied"), folder, setting)
    return folder
