"""SIGTERM and SIGINT, at any stage of a run or an evaluation, end it with
:class:`~eqflow.errors.RunInterrupted` (exit 143 or 130) and a message that says what the running
stage keeps and how to go on. train.py and evaluate.py install the handlers
(:func:`stop_on_signals`); each stage states its advice with :func:`stage`.

Inside a Lightning fit the handler runs after Lightning's own SIGTERM notifier, so the fit is
torn down as for any exception; checkpoints are written atomically, so the last one is whole."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

from pytorch_lightning.utilities.exceptions import SIGTERMException

from eqflow.errors import RunInterrupted

SIGNALS = (signal.SIGTERM, signal.SIGINT)
_stages: list[tuple[str, str]] = [("starting", "nothing was written; run the same command again")]


@contextmanager
def stage(doing: str, advice: str) -> Iterator[None]:
    """While the block runs, a signal says it stopped while ``doing`` and gives ``advice``."""
    _stages.append((doing, advice))
    try:
        yield
    finally:
        _stages.pop()


def current_stage() -> tuple[str, str]:
    return _stages[-1]


_deferred = {"depth": 0, "pending": None}


def _raise(signum: int) -> None:
    doing, advice = current_stage()
    raise RunInterrupted(
        f"stopped by {signal.Signals(signum).name} while {doing}: {advice}", exit_code=128 + signum
    )


def _stop(signum: int, frame) -> None:
    if _deferred["depth"]:
        _deferred["pending"] = _deferred["pending"] or signum
        return
    _raise(signum)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """A signal inside the block stops the run when the block ends, not inside it: a file being
    written is finished first. (Raised inside torch.save's writer, the interruption would come
    out of its C++ code as a failed write.)"""
    _deferred["depth"] += 1
    try:
        yield
    finally:
        _deferred["depth"] -= 1
        signum = _deferred["pending"] if not _deferred["depth"] else None
        if signum is not None:
            _deferred["pending"] = None
            _raise(signum)


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGINT raise RunInterrupted inside the block (handlers restored after it)."""
    previous = {s: signal.getsignal(s) for s in SIGNALS}
    for s in SIGNALS:
        signal.signal(s, _stop)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def fit_unless_stopped(trainer, model, datamodule, ckpt_path, doing: str, advice: str) -> None:
    """``trainer.fit`` as the stage ``doing``; a SIGTERM that Lightning caught (its own exit is
    a SystemExit with status 0) ends it with :class:`RunInterrupted` naming the epoch and
    ``advice`` (how to resume), so the run exits non-zero."""
    stopped = False
    with stage(doing, advice):
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
        except SIGTERMException:
            stopped = True
    if stopped or trainer.received_sigterm:
        raise RunInterrupted(
            f"{doing} was stopped (SIGTERM) in epoch {trainer.current_epoch + 1}; {advice}"
        )
