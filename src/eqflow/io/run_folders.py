"""Run folders: claimed atomically when eqflow names them, refused when a folder the user names
already holds a run (nothing is overwritten), and the OmegaConf resolvers the configs use."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

from eqflow.errors import StorageError

# what a run writes into its folder; any of them means the folder holds a run
RUN_MARKERS = ("metrics.json", "flow.pt", "checkpoints/last.ckpt")

_CLAIMED: dict[str, str] = {}

# written by an ensemble run at its root: its members (seed<s>/) are the runs to read back
ENSEMBLE_MARKER = "members.json"


def holds_a_run(folder: str | Path) -> bool:
    """Whether ``folder`` holds (part of) a train.py run: its metrics, weights or checkpoint."""
    folder = Path(folder)
    return any((folder / marker).exists() for marker in RUN_MARKERS)


def runs_inside(folder: str | Path) -> list[Path]:
    """The job folders directly below ``folder`` (a multirun's) that hold a run."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_dir() and holds_a_run(p))


def existing_run_message(folder: Path, key: str) -> str:
    return (
        f"{folder} already holds a run (it has "
        f"{', '.join(m for m in RUN_MARKERS if (folder / m).exists())}); eqflow never "
        f"overwrites one. Fix: name a new folder ({key}=<new folder>, or leave {key} out "
        f"for a fresh timestamped one), resume this run with "
        f"ckpt_path={folder / 'checkpoints' / 'last.ckpt'}, or delete the folder yourself "
        f"if it is no longer wanted"
    )


def claim_run_dir(path: str) -> str:
    """``path``, or ``path_2``, ``path_3``, ... : the first that this process can create, so that
    two runs started in the same second never share a folder (``os.mkdir`` is atomic). The same
    ``path`` asked again in one process gives the same answer (Hydra resolves it more than once)."""
    if path in _CLAIMED:
        return _CLAIMED[path]
    parent = os.path.dirname(path) or "."
    try:
        os.makedirs(parent, exist_ok=True)
        for n in range(1, 10_000):
            candidate = path if n == 1 else f"{path}_{n}"
            try:
                os.mkdir(candidate)
            except FileExistsError:
                continue
            _CLAIMED[path] = candidate
            return candidate
    except OSError as exc:
        raise StorageError.from_os_error(exc, path, "hydra.run.dir=<a writable folder>") from exc
    raise StorageError(
        f"cannot claim a run folder for {path}: 10 000 folders of that name exist. "
        f"Fix: move old runs away or set hydra.run.dir=<new folder>"
    )


def evaluated(sweep, run) -> str:
    """evaluate.py's output folder lies in the sweep or run it evaluates (outputs/evaluate when
    that is not an existing folder: nothing is created where a user mistyped a path)."""
    target = sweep if sweep is not None else run
    return str(target) if target is not None and os.path.isdir(str(target)) else "outputs/evaluate"


def register_resolvers() -> None:
    """``${claim_run_dir:...}`` and ``${evaluated:...}`` for the configs (called by eqflow's Hydra
    plugin, :mod:`hydra_plugins.eqflow_plugin`, whenever Hydra starts)."""
    OmegaConf.register_new_resolver("claim_run_dir", claim_run_dir, replace=True)
    OmegaConf.register_new_resolver("evaluated", evaluated, replace=True)
