"""What every snapshot system provides."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch

from eqflow.settings import INT_NONNEG, INT_POS, NUM_NONNEG, NUM_POS, Rule, check_setting

# the fewest points (snapshots, rows of a file) a score model and a flow are learned from
MIN_POINTS = 100
# beyond this magnitude a value's square overflows float32 arithmetic (~3e38)
MAX_MAGNITUDE = 1e15

# the rule of every data.<name> setting the systems take (eqflow.config checks a composed
# config with these, each system's constructor its own arguments)
DATA_RULES: dict[str, Rule] = {
    "n_samples": INT_POS,
    "std": NUM_POS,
    "noise": NUM_NONNEG,
    "r_min": NUM_NONNEG,
    "r_max": NUM_POS,
    "dim": INT_POS,
    "n_trajectories": INT_POS,
    "n_steps": INT_POS,
    "dt": NUM_POS,
    "burn_in_steps": INT_NONNEG,
    "init_std": NUM_POS,
    "size": Rule(int, ge=8, nullable=True),
    "max_points": Rule(int, ge=2, nullable=True),
    "drop_nonfinite": Rule(bool),
    "steps_per_period": INT_POS,
    "burn_in_periods": NUM_NONNEG,
    "steps": INT_POS,
    "chunk": INT_POS,
    "canvas": INT_POS,
    "icon_size": INT_POS,
    "n_icons": INT_POS,
    "attempts": INT_POS,
}


def check_data_settings(**values) -> None:
    """Check each ``data.<name>=value`` against its rule in :data:`DATA_RULES`."""
    for name, value in values.items():
        check_setting(f"data.{name}", value, DATA_RULES[name])


@dataclass
class Snapshots:
    """Samples ``x`` (N, d) in the coordinates the models see: ``x = (raw - shift) / scale``."""

    x: torch.Tensor
    shift: torch.Tensor
    scale: torch.Tensor

    def to_dict(self) -> dict:
        return {"x": self.x, "shift": self.shift, "scale": self.scale}

    @classmethod
    def from_dict(cls, d: dict) -> Snapshots:
        missing = {"x", "shift", "scale"} - set(d)
        if missing:
            raise KeyError(f"snapshot record lacks {sorted(missing)}")
        return cls(d["x"], d["shift"], d["scale"])

    @classmethod
    def standardised(cls, raw: torch.Tensor, standardise: bool = True) -> Snapshots:
        if not standardise:
            d = raw.shape[1]
            return cls(raw.float(), torch.zeros(d), torch.ones(d))
        shift, scale = raw.mean(0), raw.std(0)
        return cls(((raw - shift) / scale).float(), shift.float(), scale.float())


def random_subset(x: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """``min(n, len(x))`` rows of ``x`` drawn without replacement from ``generator``."""
    idx = torch.randperm(len(x), generator=generator)[: min(n, len(x))]
    return x[idx]


class SnapshotSystem(ABC):
    """A source of snapshots. Subclasses set ``dim`` and implement :meth:`generate`.

    ``cache_data`` marks systems whose generation is worth caching on disk.
    """

    dim: int
    cache_data: bool = False

    @abstractmethod
    def generate(self, generator: torch.Generator) -> Snapshots:
        """Draw the snapshots from ``generator`` (the same generator state gives the same data)."""

    def true_field(self, snapshots: Snapshots) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The ground-truth vector field in the snapshots' coordinates, if the system has one."""
        return None

    def simulator(self, snapshots: Snapshots) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
        """``step(x, n)``: ``n`` steps of the true dynamics in the snapshots' coordinates, for
        systems that are simulated rather than given as a field (Gray-Scott); else None."""
        return None


@dataclass
class SnapshotData:
    """A system and its drawn snapshots: what the protocols and analyses measure a flow on."""

    system: SnapshotSystem
    snapshots: Snapshots

    @property
    def x(self) -> torch.Tensor:
        return self.snapshots.x

    @property
    def dim(self) -> int:
        return self.snapshots.x.shape[1]

    def true_field(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        return self.system.true_field(self.snapshots)

    def simulator(self) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
        return self.system.simulator(self.snapshots)
