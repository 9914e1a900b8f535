"""2-D toy distributions (docs/method.md §5)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from eqflow.data.base import Snapshots, SnapshotSystem, check_data_settings


class TwoPeaks(SnapshotSystem):
    """Equal mixture of isotropic Gaussians (default: at (-1,-1) and (1,1), std 0.5)."""

    dim = 2

    def __init__(
        self,
        n_samples: int = 10_000,
        centers: Sequence[Sequence[float]] = ((-1.0, -1.0), (1.0, 1.0)),
        std: float = 0.5,
    ):
        check_data_settings(n_samples=n_samples, std=std)
        self.n_samples, self.std = int(n_samples), float(std)
        self.centers = torch.tensor([list(c) for c in centers], dtype=torch.float32)
        self.dim = self.centers.shape[1]

    def generate(self, generator: torch.Generator) -> Snapshots:
        idx = torch.randint(len(self.centers), (self.n_samples,), generator=generator)
        noise = torch.randn(self.n_samples, self.dim, generator=generator)
        return Snapshots.standardised(self.centers[idx] + self.std * noise, standardise=False)


class Ring(SnapshotSystem):
    """Uniform (in area) on the annulus ``r_min <= r <= r_max``."""

    dim = 2

    def __init__(self, n_samples: int = 10_000, r_min: float = 1.0, r_max: float = 2.0):
        check_data_settings(n_samples=n_samples)
        if not 0 <= r_min < r_max:
            raise ValueError(f"data.r_min/r_max need 0 <= r_min < r_max, got {r_min}, {r_max}")
        self.n_samples, self.r_min, self.r_max = int(n_samples), float(r_min), float(r_max)

    def generate(self, generator: torch.Generator) -> Snapshots:
        u = torch.rand(self.n_samples, generator=generator)
        r = torch.sqrt(self.r_min**2 + u * (self.r_max**2 - self.r_min**2))
        theta = 2 * math.pi * torch.rand(self.n_samples, generator=generator)
        x = torch.stack([r * torch.cos(theta), r * torch.sin(theta)], dim=1)
        return Snapshots.standardised(x, standardise=False)


class TwoMoons(SnapshotSystem):
    """scikit-learn's two moons with Gaussian noise, standardised per coordinate."""

    dim = 2

    def __init__(self, n_samples: int = 5_000, noise: float = 0.1, standardise: bool = True):
        check_data_settings(n_samples=n_samples, noise=noise)
        self.n_samples, self.noise, self.standardise = int(n_samples), float(noise), standardise

    def generate(self, generator: torch.Generator) -> Snapshots:
        from sklearn.datasets import make_moons

        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        x, _ = make_moons(self.n_samples, noise=self.noise, random_state=seed)
        return Snapshots.standardised(torch.as_tensor(x, dtype=torch.float64), self.standardise)
