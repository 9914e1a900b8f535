"""Errors with messages that name the problem and the fix."""

from __future__ import annotations

import errno

import torch


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; the run stops before writing anything more."""


class RunInterrupted(BaseException):
    """The run was stopped (SIGTERM or SIGINT) before it finished; the message says what was kept
    and how to go on. ``exit_code`` is what the process exits with: 128 + the signal's number
    (143 for SIGTERM, 130 for SIGINT), as a shell or Slurm reports a job killed by it.

    A :class:`BaseException`, as :class:`KeyboardInterrupt` is: the signal handler raises it
    wherever the program happens to be, and an ``except Exception`` there (in a library, or
    around one bad run of an evaluation) must not swallow it or turn it into another error."""

    def __init__(self, message: str, exit_code: int = 143):
        super().__init__(message)
        self.exit_code = exit_code


class StorageError(OSError):
    """A file or folder could not be written (full disk, read-only or forbidden folder); the
    message names the path and the setting that moves it."""

    REASONS = {
        errno.ENOSPC: "no space left on the device",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EDQUOT: "the disk quota is exceeded",
    }

    def __init__(self, message: str, code: int | None = None):
        super().__init__(message)
        self.errno = code

    def __str__(self) -> str:
        return self.args[0]

    @classmethod
    def from_os_error(cls, exc: OSError, path, setting: str) -> "StorageError":
        if isinstance(exc, StorageError):
            return exc
        why = cls.REASONS.get(exc.errno, exc.strerror or str(exc))
        return cls(
            f"cannot write {path}: {why}. Nothing partial was left there. Fix: free space "
            f"or make it writable, or write elsewhere with {setting}",
            exc.errno,
        )


def check_finite_loss(loss: torch.Tensor, what: str, step: int) -> None:
    if not torch.isfinite(loss).all():
        raise NonFiniteLossError(
            f"{what} loss became {loss.item()} at step {step}; stopping so no garbage is written. "
            f"Lower the learning rate ({what}.model.lr), check the data for NaNs, or resume from "
            f"the last checkpoint written before it (every checkpoint holds finite weights): "
            f"ckpt_path=<run>/checkpoints/last.ckpt."
        )
