"""Checkpoints: written atomically (a temporary file in the same folder, then a rename), one
``last.ckpt`` per fit rewritten after every epoch, and the check before resuming from it."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from eqflow.errors import ConfigError
from eqflow.io.cache import atomic_torch_save
from eqflow.io.storage import RUN_FOLDER

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written atomically; a failed write names the file and ``setting``, the
    override that moves it (the run folder's, or the cache's for the score model's).

    Lightning's own ``TorchCheckpointIO`` serialises to memory and then writes the file in
    place (``_atomic_save``: atomic with respect to serialisation, not to the file system), so
    a process killed during the write leaves a truncated ``last.ckpt``; hence the rename here."""

    def __init__(self, setting: str = RUN_FOLDER):
        super().__init__()
        self.setting = setting

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_torch_save(checkpoint, path, setting=self.setting)


def every_epoch_checkpoint(folder: str | Path) -> ModelCheckpoint:
    """``folder/last.ckpt``, overwritten after every epoch (not only when the fit ends, which
    is all ``save_last`` with ``save_top_k=0`` does)."""
    return ModelCheckpoint(
        dirpath=str(folder),
        filename="last",
        save_top_k=1,
        enable_version_counter=False,
        every_n_epochs=1,
    )


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
        log.warning(
            "Cannot resume from %s (%s: %s); training from the start instead",
            path,
            type(exc).__name__,
            exc,
        )
        shutil.rmtree(folder, ignore_errors=True)
        return None
    log.info("Resuming the interrupted score training from %s (after epoch %d)", path, epoch + 1)
    return str(path)


# ---- the check before resuming: is ckpt_path a checkpoint of this run's flow? -----------------


def read_checkpoint(path: str, cfg: DictConfig) -> dict:
    """Read ``ckpt_path`` safely (tensors and plain containers only) and check that it is an
    eqflow flow checkpoint of the configured flow; a clear error otherwise."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ckpt_path={path} does not exist; pass the path of a checkpoint "
            f"written by a previous run, e.g. "
            f"outputs/runs/<name>/<time>/checkpoints/last.ckpt"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(
            f"ckpt_path={path} cannot be read as a checkpoint ({type(exc).__name__}); "
            f"it is truncated, corrupt or not a checkpoint. Pass another one (each "
            f"run keeps checkpoints/last.ckpt) or start the run without ckpt_path"
        )
    if not isinstance(state, dict) or "state_dict" not in state or "hyper_parameters" not in state:
        raise ConfigError(
            f"ckpt_path={path} is not an eqflow flow checkpoint (no state_dict and "
            f"hyper_parameters); pass <run>/checkpoints/last.ckpt"
        )
    # the architecture must match; training settings (lr, a relaxation stage) may change
    configured = OmegaConf.to_container(cfg.flow.model, resolve=True)
    differ = [
        f"{k} (checkpoint {state['hyper_parameters'].get(k)!r}, config {v!r})"
        for k, v in configured.items()
        if k in ("hidden", "activation", "n_freqs")
        and k in state["hyper_parameters"]
        and _plain(state["hyper_parameters"][k]) != _plain(v)
    ]
    if differ:
        raise ConfigError(
            f"ckpt_path={path} holds another flow architecture: "
            f"{'; '.join(differ)}. Resume with the settings the run had (its "
            f".hydra/config.yaml), or start a new run without ckpt_path"
        )
    return state


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def check_checkpoint_matches(state: dict, path: str, flow: pl.LightningModule) -> None:
    """The checkpoint's flow must fit this flow's architecture, and its score model must be the
    one this config trains (same data, same score settings): resuming never swaps it."""
    own = flow.state_dict()
    theirs = state["state_dict"]
    shapes = [k for k in own if k in theirs and own[k].shape != theirs[k].shape]
    missing = [k for k in own if k not in theirs and not k.startswith("anchor")]
    if shapes or missing:
        raise ConfigError(
            f"ckpt_path={path} holds another architecture (parameters "
            f"{', '.join((shapes + missing)[:4])} differ); resume with the run's own "
            f"flow settings (.hydra/config.yaml)"
        )
    score = [
        k
        for k in own
        if k.startswith("score_model.")
        and k in theirs
        and not torch.equal(own[k].cpu(), theirs[k].cpu())
    ]
    if score:
        raise ConfigError(
            f"ckpt_path={path} was trained with another score model than this "
            f"config's (other data or score settings: {score[0]} differs); resume "
            f"with the data and score settings of the run that wrote it "
            f"(its .hydra/config.yaml)"
        )
