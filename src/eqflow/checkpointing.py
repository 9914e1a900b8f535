"""Checkpoints: written atomically (a temporary file in the same folder, then a rename), one
``last.ckpt`` per fit rewritten after every epoch, and the check before resuming from it."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from eqflow.cache import atomic_torch_save
from eqflow.storage import RUN_FOLDER

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path, setting=RUN_FOLDER)


def every_epoch_checkpoint(folder: str | Path) -> ModelCheckpoint:
    """``folder/last.ckpt``, overwritten after every epoch (not only when the fit ends, which
    is all ``save_last`` with ``save_top_k=0`` does)."""
    return ModelCheckpoint(dirpath=str(folder), filename="last", save_top_k=1,
                           enable_version_counter=False, every_n_epochs=1)


def resumable_checkpoint(folder: Path) -> str | None:
    """``folder/last.ckpt`` if an interrupted fit left a readable one there, else None
    (an unreadable one is reported and the fit starts over)."""
    path = folder / "last.ckpt"
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        epoch = int(state["epoch"])
    except Exception as exc:  # truncated or foreign file: start the fit over
        log.warning("Cannot resume from %s (%s: %s); training from the start instead",
                    path, type(exc).__name__, exc)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    log.info("Resuming the interrupted score training from %s (after epoch %d)", path, epoch + 1)
    return str(path)
