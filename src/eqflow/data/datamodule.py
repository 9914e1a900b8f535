"""Serving in-memory snapshots in shuffled batches."""
from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler

from eqflow.data.base import Snapshots, SnapshotSystem


class _Rows(Dataset):
    """Index a tensor by a list of rows at once (one call per batch, no per-item collation)."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, rows):
        return self.x[rows]


class SnapshotDataModule(pl.LightningDataModule):
    def __init__(self, system: SnapshotSystem, snapshots: Snapshots, batch_size: int = 2048,
                 seed: int = 0, drop_last: bool = True):
        super().__init__()
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        self.system, self.snapshots = system, snapshots
        self.batch_size = min(int(batch_size), len(snapshots.x))
        self.seed, self.drop_last = seed, drop_last

    @property
    def x(self) -> torch.Tensor:
        return self.snapshots.x

    @property
    def dim(self) -> int:
        return self.snapshots.x.shape[1]

    def true_field(self):
        return self.system.true_field(self.snapshots)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        sampler = BatchSampler(RandomSampler(range(len(self.x)), generator=generator),
                               self.batch_size, self.drop_last)
        return DataLoader(_Rows(self.x), sampler=sampler, batch_size=None)
