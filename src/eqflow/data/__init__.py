"""The systems whose snapshots eqflow learns from, and how samples are served."""
from eqflow.data.base import Snapshots, SnapshotSystem, random_subset
from eqflow.data.datamodule import SnapshotDataModule
from eqflow.data.ode import Lorenz, ODESystem
from eqflow.data.toys import Ring, TwoMoons, TwoPeaks

__all__ = ["Lorenz", "ODESystem", "Ring", "SnapshotDataModule", "SnapshotSystem", "Snapshots",
           "TwoMoons", "TwoPeaks", "random_subset"]
