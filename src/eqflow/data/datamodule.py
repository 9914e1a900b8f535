"""Serving in-memory snapshots in shuffled batches."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from eqflow.data.base import SnapshotData, Snapshots, SnapshotSystem


class Rows(Dataset):
    """Index a tensor by a list of rows at once (one call per batch, no per-item collation);
    a list of K lists gives (K, B, ...)."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, rows):
        return self.x[torch.as_tensor(rows)]


class SnapshotDataModule(pl.LightningDataModule):
    def __init__(
        self,
        system: SnapshotSystem,
        snapshots: Snapshots,
        batch_size: int = 2048,
        seed: int = 0,
        drop_last: bool = True,
        val_fraction: float = 0.0,
    ):
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if not 0 <= val_fraction < 1:
            raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}")
        self.system, self.snapshots = system, snapshots
        self.seed, self.drop_last = seed, drop_last
        n = len(snapshots.x)
        n_val = int(round(val_fraction * n))
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        self.val_rows, self.train_rows = order[:n_val], order[n_val:]
        self.batch_size = min(int(batch_size), len(self.train_rows))

    @property
    def data(self) -> SnapshotData:
        return SnapshotData(self.system, self.snapshots)

    @property
    def x(self) -> torch.Tensor:
        return self.snapshots.x

    def train_dataloader(self) -> DataLoader:
        """Shuffled batches of the training rows (all rows when there is no validation split)."""
        generator = torch.Generator().manual_seed(self.seed)
        rows = self.x if not len(self.val_rows) else self.x[self.train_rows]
        sampler = BatchSampler(
            RandomSampler(range(len(rows)), generator=generator), self.batch_size, self.drop_last
        )
        return DataLoader(Rows(rows), sampler=sampler, batch_size=None)

    def val_dataloader(self) -> DataLoader | list:
        """The held-out rows in order (an empty list when ``val_fraction`` is 0)."""
        if not len(self.val_rows):
            return []
        rows = self.x[self.val_rows]
        sampler = BatchSampler(range(len(rows)), self.batch_size, drop_last=False)
        return DataLoader(Rows(rows), sampler=sampler, batch_size=None)
