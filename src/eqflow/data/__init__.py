"""The systems whose snapshots eqflow learns from (each a :class:`SnapshotSystem`), and how
samples are served."""

from eqflow.data.alife import AlifeSystem
from eqflow.data.base import SnapshotData, Snapshots, SnapshotSystem, random_subset
from eqflow.data.datamodule import SnapshotDataModule
from eqflow.data.dysts_systems import DystsField, DystsSystem
from eqflow.data.files import DataFileError, ImagesFromFiles, PointsFromFile
from eqflow.data.gray_scott import GrayScott, GrayScottSystem
from eqflow.data.ode import Lorenz, Lorenz96, ODESystem
from eqflow.data.toys import Ring, TwoMoons, TwoPeaks

__all__ = [
    "AlifeSystem",
    "DataFileError",
    "DystsField",
    "DystsSystem",
    "ImagesFromFiles",
    "PointsFromFile",
    "GrayScott",
    "GrayScottSystem",
    "Lorenz",
    "Lorenz96",
    "ODESystem",
    "Ring",
    "SnapshotData",
    "SnapshotDataModule",
    "SnapshotSystem",
    "Snapshots",
    "TwoMoons",
    "TwoPeaks",
    "random_subset",
]
