"""The measurement runner: every protocol on one flow or on several at once (batched where a
protocol can), each with its own generator, its values merged into the run folder's
metrics.json and sent with its figures to the loggers. Called when a fit ends (the
:class:`~eqflow.callbacks.Measure` callback), for training-free flows and ensemble members
(:mod:`eqflow.stages.flow`) and by evaluate.py (:func:`eqflow.runs.measure_run`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from eqflow.io.loggers import log_figure, log_to_loggers, log_video
from eqflow.io.metrics_file import update_metrics
from eqflow.progress import announced
from eqflow.protocols.base import Measurement, Protocol

log = logging.getLogger(__name__)


def measure_and_record(
    protocols: list[Protocol],
    flow,
    data,
    seed: int,
    output_dir: str | Path,
    loggers: list = (),
    step: int = 0,
) -> dict:
    """Run each protocol on ``flow`` in eval mode without gradients, every one with its own
    generator seeded by ``seed``; merge its values (and ``time/<name>_s``) into
    ``output_dir/metrics.json``, send them and its figures to the loggers. Returns the values."""
    (measured,) = measure_flows(protocols, [flow], data, [seed], [output_dir])
    send_to_loggers(loggers, measured, step)
    return measured.values


def measure_flows(
    protocols: list[Protocol], flows: list, data, seeds: list[int], output_dirs: list[str | Path]
) -> list[Measurement]:
    """Each protocol on all ``flows`` at once (``Protocol.measure_many``: batched where the
    protocol can), flow k with generators seeded by ``seeds[k]``, its values merged into
    ``output_dirs[k]/metrics.json``. Returns one merged :class:`Measurement` per flow."""
    dirs = [Path(d) for d in output_dirs]
    merged = [Measurement() for _ in flows]
    states = [f.training for f in flows]
    for f in flows:
        f.eval()
    try:
        for protocol in protocols:
            timing: dict = {}
            what = f"Measuring {protocol.name}" + (f" of {len(flows)} flows" if flows[1:] else "")
            with announced(what, timing, "s"), torch.no_grad():
                results = protocol.measure_many(
                    flows,
                    data,
                    [torch.Generator().manual_seed(int(s)) for s in seeds],
                    [d / "figures" for d in dirs],
                )
            seconds = timing["s"] / len(flows)  # per flow, batched or not
            for result, total, folder in zip(results, merged, dirs):
                if result.values:
                    values = {**result.values, f"time/{protocol.name}_s": seconds}
                    update_metrics(folder, values)
                    total.values.update(values)
                total.figures.update(result.figures)
                total.videos.update(result.videos)
    finally:
        for f, state in zip(flows, states):
            f.train(state)
    return merged


def send_to_loggers(loggers: list, measured: Measurement, step: int = 0) -> None:
    """A measurement's values, figures and animations to every logger."""
    if measured.values:
        log_to_loggers(loggers, measured.values, step=step)
    for key, path in measured.figures.items():
        log_figure(loggers, key, path)
        log.info("Figure %s written to %s", key, path)
    for key, path in measured.videos.items():
        log_video(loggers, key, path)
        log.info("Animation written to %s", path)
