"""What a protocol is: settings, and ``measure(flow, data, generator, figures)`` that returns the
numbers and the figure files of one measurement of a flow. Plain Python, no Lightning: the end
of a fit, ``evaluate.py`` and a user's script call the same protocols."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass
class Measurement:
    """What a protocol leaves: ``values`` for metrics.json and the loggers, ``figures`` and
    ``videos`` as {logger key: file written}."""

    values: dict = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    videos: dict[str, Path] = field(default_factory=dict)


class Protocol(ABC):
    """Base of the measurement protocols. ``name`` keys the timing (``time/<name>_s``).

    ``measure`` sees the flow through ``velocity``, ``score``, ``score_model`` (a
    :class:`eqflow.models.score.Score`) and ``alpha``, and the data through
    :class:`eqflow.data.SnapshotData`; ``figures`` is the folder its figures go to (None: none).
    """

    name = "protocol"

    @abstractmethod
    def measure(self, flow, data, generator: torch.Generator, figures: Path | None) -> Measurement:
        """One flow measured with draws from ``generator``; figures into ``figures``."""

    def measure_many(
        self, flows: list, data, generators: list[torch.Generator], figures: list[Path | None]
    ) -> list[Measurement]:
        """Each flow with its own generator and figure folder: the same numbers as measuring
        them one at a time; protocols that can batch the flows override this."""
        return [self.measure(f, data, g, d) for f, g, d in zip(flows, generators, figures)]
