"""Progress of long work: a tqdm bar on an interactive terminal, quiet in logs, Slurm and CI
(tqdm disables itself when stderr is not a terminal; ``EQFLOW_PROGRESS=0`` silences it, ``=1``
forces it), and a log line when a stage starts and when it ends."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm.auto import tqdm

log = logging.getLogger("eqflow")


def _disabled() -> bool | None:
    """tqdm's ``disable``: None lets tqdm decide (off where stderr is not a terminal)."""
    return {"0": True, "1": False}.get(os.environ.get("EQFLOW_PROGRESS", ""), None)


def bar(total: int | None, desc: str) -> tqdm:
    """A progress bar to ``update()`` by hand (closed by the caller, or use it as a context)."""
    return tqdm(total=total, desc=desc, leave=False, disable=_disabled(), mininterval=0.5)


def progress_range(n: int, desc: str) -> Iterator[int]:
    """``range(n)`` with a bar."""
    with bar(n, desc) as b:
        for k in range(n):
            yield k
            b.update()


@contextmanager
def announced(what: str, timings: dict | None = None, key: str | None = None):
    """Log ``what`` when it starts and its seconds when it ends (into ``timings[key]`` too)."""
    log.info("%s ...", what)
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    log.info("%s: done in %.1f s", what, seconds)
    if timings is not None and key is not None:
        timings[key] = seconds
