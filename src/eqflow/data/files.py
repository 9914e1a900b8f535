"""A user's own snapshots: points (N, d) or images (N, C, H, W) read from files.

Every problem with a file is found when the system is built (before a run writes anything) and
named with the file, what is wrong and what to do about it (:class:`DataFileError`).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import torch

from eqflow.data.base import MAX_MAGNITUDE, MIN_POINTS, Snapshots, SnapshotSystem, random_subset

log = logging.getLogger(__name__)

POINT_FORMATS = (".npy", ".npz", ".csv", ".tsv", ".pt", ".parquet")
IMAGE_FORMATS = ("a folder of .png files", ".npz", ".npy")


class DataFileError(ValueError):
    """A data file is missing, unreadable or holds data eqflow cannot learn from."""


CSV_FIX = (
    "Fix: give a text file with one point per row and one number per column, separated by "
    "commas (tabs for .tsv), a header row optional, e.g. `x,y` then `0.1,2.3`; arrays in "
    "binary form go in .npy, .npz or .pt"
)


def _existing(path: str | Path, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataFileError(
            f"data.path={path}: no such {what}; give the path of your {what} "
            f"(relative to the folder you run from, or absolute)"
        )
    return p


def _array_from_npz(p: Path, key: str | None) -> np.ndarray:
    with np.load(p, allow_pickle=False) as archive:
        keys = list(archive.keys())
        if not keys:
            raise DataFileError(f"{p}: the .npz archive holds no arrays")
        if key is None and len(keys) > 1:
            raise DataFileError(
                f"{p}: the archive holds {len(keys)} arrays ({', '.join(keys)}); "
                f"pick one with data.key=<name>"
            )
        name = key if key is not None else keys[0]
        if name not in keys:
            raise DataFileError(
                f"{p}: no array {name!r} in the archive; it holds {', '.join(keys)} (data.key)"
            )
        return archive[name]


def _array_from_pt(p: Path, key: str | None) -> np.ndarray:
    obj = torch.load(p, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        if key is None or key not in obj:
            raise DataFileError(
                f"{p}: the file holds a dict ({', '.join(map(str, obj))}); pick "
                f"the tensor with data.key=<name>"
            )
        obj = obj[key]
    if not torch.is_tensor(obj):
        raise DataFileError(f"{p}: expected a tensor, found a {type(obj).__name__}")
    return obj.detach().cpu().numpy()


def _rows_from_csv(p: Path, columns: list | None) -> tuple[np.ndarray, list[str] | None]:
    """The rows of numbers and the names of the columns kept (None without a header row)."""
    delimiter = "\t" if p.suffix.lower() == ".tsv" else ","
    with open(p, newline="") as fh:
        rows = [
            (i + 1, r)
            for i, r in enumerate(csv.reader(fh, delimiter=delimiter))
            if any(c.strip() for c in r)
        ]
    if not rows:
        raise DataFileError(f"{p}: the file is empty. {CSV_FIX}")
    header = None
    if any(_number(c) is None for c in rows[0][1]):
        header = [c.strip() for c in rows[0][1]]
        rows = rows[1:]
    if not rows:
        raise DataFileError(f"{p}: the file has a header and no rows of numbers. {CSV_FIX}")
    values = _csv_values(p, rows, header)
    if columns is None:
        return values, header
    idx = [_column_index(p, c, header, values.shape[1]) for c in columns]
    return values[:, idx], [header[i] for i in idx] if header is not None else None


def _number(cell: str) -> float | None:
    try:
        return float(cell)
    except ValueError:
        return None


def _csv_values(p: Path, rows: list[tuple[int, list[str]]], header: list | None) -> np.ndarray:
    """The (rows, columns) numbers; a short or long row or a cell that is no number is named
    with its line."""
    width = len(header) if header is not None else len(rows[0][1])
    values = np.empty((len(rows), width))
    for k, (line, row) in enumerate(rows):
        if len(row) != width:
            raise DataFileError(
                f"{p}, line {line}: {len(row)} values where the "
                f"{'header' if header else 'first row'} has {width}; every row "
                f"needs one value per column"
            )
        for j, cell in enumerate(row):
            v = _number(cell)
            if v is None:
                col = header[j] if header else str(j)
                raise DataFileError(
                    f"{p}, line {line}, column {col}: {cell!r} is not a number; "
                    f"fix or remove that row"
                )
            values[k, j] = v
    return values


def _column_index(p: Path, c: int | str, header: list | None, width: int) -> int:
    """The index of ``data.columns`` entry ``c``: a 0-based index (negative counts from the end)
    or a header name."""
    if isinstance(c, int) or (isinstance(c, str) and c.lstrip("-").isdigit()):
        i = int(c)
        if not -width <= i < width:
            raise DataFileError(f"data.columns: index {i} is outside the file's {width} columns")
        return i
    if header is None:
        raise DataFileError(
            f"data.columns: {c!r} is a name, but {p} has no header row; "
            f"pick columns by index (0-based)"
        )
    if c not in header:
        raise DataFileError(
            f"data.columns: no column {c!r} in {p}; its columns are {', '.join(header)}"
        )
    return header.index(c)


def _array_from_parquet(p: Path, columns: list | None) -> tuple[np.ndarray, list[str]]:
    try:
        import pandas as pd

        table = pd.read_parquet(p, columns=[str(c) for c in columns] if columns else None)
    except ImportError as exc:
        raise DataFileError(
            f"{p}: reading .parquet needs pandas and pyarrow (pip install pandas "
            f"pyarrow); or save the table as .csv or .npy"
        ) from exc
    numeric = table.select_dtypes("number")
    if numeric.shape[1] != table.shape[1]:
        bad = [c for c in table.columns if c not in numeric.columns]
        raise DataFileError(
            f"{p}: columns {bad} are not numeric; pick numeric ones with data.columns=[...]"
        )
    return numeric.to_numpy(dtype=float), [str(c) for c in numeric.columns]


def read_points(
    path: str | Path, key: str | None = None, columns: list | None = None
) -> tuple[np.ndarray, list[str] | None]:
    """The array in ``path`` (float64), in the file's own layout (no checks of its shape), and
    its columns' names where the file has them (a CSV/TSV header, parquet)."""
    p = _existing(path, "file")
    if p.is_dir():
        raise DataFileError(
            f"data.path={path} is a folder; data=points reads one file ({', '.join(POINT_FORMATS)})"
        )
    ext = p.suffix.lower()
    if ext not in POINT_FORMATS:
        raise DataFileError(
            f"data.path={path}: unknown extension {ext!r}; points are read from "
            f"{', '.join(POINT_FORMATS)}"
        )
    if p.stat().st_size == 0:
        raise DataFileError(
            f"{p}: the file is empty. Fix: give a file holding the points, one "
            f"per row ({', '.join(POINT_FORMATS)})"
        )
    names = None
    try:
        if ext == ".npy":
            arr = np.load(p, allow_pickle=False)
        elif ext == ".npz":
            arr = _array_from_npz(p, key)
        elif ext == ".pt":
            arr = _array_from_pt(p, key)
        elif ext == ".parquet":
            arr, names = _array_from_parquet(p, columns)
        else:
            arr, names = _rows_from_csv(p, columns)
    except DataFileError:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever the reader says, say which file
        fix = CSV_FIX if ext in (".csv", ".tsv") else f"Fix: give a complete {ext} file"
        raise DataFileError(
            f"{p}: cannot be read as {ext} ({type(exc).__name__}: {exc}); it is "
            f"not a {ext} file or it is damaged. {fix}"
        ) from exc
    if columns is not None and ext in (".npy", ".npz", ".pt"):
        try:
            arr = np.asarray(arr)[:, [int(c) for c in columns]]
        except (ValueError, IndexError) as exc:
            raise DataFileError(
                f"data.columns={list(columns)}: arrays are picked by index "
                f"(0-based, fewer than {np.shape(arr)[-1]}); {exc}"
            ) from exc
    if not np.issubdtype(np.asarray(arr).dtype, np.number):
        raise DataFileError(f"{p}: holds {np.asarray(arr).dtype} values, not numbers")
    return np.asarray(arr, dtype=np.float64), names


def check_magnitudes(arr: np.ndarray, p: Path, outlier_scale: float = 1e6) -> None:
    """Refuse values no float32 computation survives (beyond MAX_MAGNITUDE), and a value so far
    from the rest (``outlier_scale`` robust scales from the median) that the standardisation's
    scale would be that one value: both are almost always a corrupt or mis-parsed cell."""
    row, col = np.unravel_index(np.abs(arr).argmax(), arr.shape)
    if abs(arr[row, col]) > MAX_MAGNITUDE:
        raise DataFileError(
            f"{p}: row {row + 1}, column {col} holds {arr[row, col]:g}, beyond "
            f"the {MAX_MAGNITUDE:g} eqflow accepts (its square overflows float32). "
            f"Fix: remove or correct that row, or rescale the column"
        )
    median = np.median(arr, axis=0)
    mad = 1.4826 * np.median(np.abs(arr - median), axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(mad > 0, np.abs(arr - median) / mad, 0.0)
    row, col = np.unravel_index(z.argmax(), z.shape)
    if z[row, col] > outlier_scale:
        raise DataFileError(
            f"{p}: row {row + 1}, column {col} holds {arr[row, col]:g}, "
            f"{z[row, col]:.3g} robust scales (MAD) from the column's median "
            f"{median[col]:g}: standardised, that one value would set the column's "
            f"scale. Fix: remove or correct that row"
        )


class PointsFromFile(SnapshotSystem):
    """Points (N, d) from ``path`` (.npy, .npz with ``key``, .csv/.tsv with or without a header,
    ``columns`` picking columns by name or index, .pt, .parquet where pandas and pyarrow are
    installed); at most ``max_points`` of them (drawn from ``data_seed``), standardised per
    coordinate (the shift and scale are kept to map results back). Rows with NaN or infinite
    values are refused, or dropped with a warning when ``drop_nonfinite``. The file is read and
    checked when the system is built; the cache key holds the file's bytes."""

    cache_data = True

    def __init__(
        self,
        path: str,
        key: str | None = None,
        columns: list | None = None,
        max_points: int | None = None,
        drop_nonfinite: bool = False,
        standardise: bool = True,
        min_points: int = MIN_POINTS,
    ):
        if max_points is not None and max_points < min_points:
            raise DataFileError(f"data.max_points={max_points}: keep at least {min_points} points")
        self.path, self.max_points, self.standardise = str(path), max_points, standardise
        arr, names = read_points(path, key, list(columns) if columns is not None else None)
        self.points = self.check(arr, Path(path), drop_nonfinite, min_points)
        self.dim = self.points.shape[1]
        if names is None:  # no header: the picked indices, or x0, x1, ...
            names = [str(c) for c in columns] if columns is not None else None
        self.names = names or [f"x{i}" for i in range(self.dim)]  # for figures

    @staticmethod
    def check(arr: np.ndarray, p: Path, drop_nonfinite: bool, min_points: int) -> torch.Tensor:
        if arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
            raise DataFileError(
                f"{p}: one column of numbers; points need at least 2 "
                f"coordinates (a (N, d) array, d >= 2, one point per row)"
            )
        if arr.ndim != 2:
            raise DataFileError(
                f"{p}: an array of shape {arr.shape}; points are (N, d), one per "
                f"row (images: data=images)"
            )
        finite = np.isfinite(arr).all(axis=1)
        bad = int((~finite).sum())
        if bad:
            if not drop_nonfinite:
                raise DataFileError(
                    f"{p}: {bad} of {len(arr)} rows hold NaN or infinite values; "
                    f"clean them, or drop those rows with data.drop_nonfinite=true"
                )
            log.warning(
                "%s: dropped %d of %d rows with NaN or infinite values (data.drop_nonfinite=true)",
                p,
                bad,
                len(arr),
            )
            arr = arr[finite]
        if len(arr) < min_points:
            raise DataFileError(
                f"{p}: {len(arr)} points; eqflow needs at least {min_points} to "
                f"learn a score and a flow"
            )
        check_magnitudes(arr, p)
        std = arr.std(axis=0)
        flat = [int(j) for j in np.flatnonzero(std == 0)]
        if flat:
            raise DataFileError(
                f"{p}: column(s) {flat} are constant (zero scale); leave them "
                f"out with data.columns=[...]"
            )
        return torch.from_numpy(arr)

    def generate(self, generator: torch.Generator) -> Snapshots:
        x = self.points
        if self.max_points is not None and len(x) > self.max_points:
            x = random_subset(x, int(self.max_points), generator)
        return Snapshots.standardised(x, self.standardise)


def _image_array(p: Path, key: str | None) -> np.ndarray:
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() == ".png")
        if not files:
            raise DataFileError(f"data.path={p}: the folder holds no .png files")
        from PIL import Image

        arrays, first = [], None
        for f in files:
            try:
                with Image.open(f) as img:
                    mode, size, arr = img.mode, img.size, np.asarray(img)
            except Exception as exc:  # noqa: BLE001
                raise DataFileError(
                    f"{f}: cannot be read as a PNG ({exc}): it is not a PNG "
                    f"image or it is damaged. Fix: export it again as PNG, or "
                    f"move it out of the folder"
                ) from exc
            if first is None:
                first = (f.name, mode, size)
            elif (mode, size) != first[1:]:
                raise DataFileError(
                    f"{f}: {mode} {size[0]}x{size[1]}, but {first[0]} is "
                    f"{first[1]} {first[2][0]}x{first[2][1]}; every image needs "
                    f"the same size and mode (convert them first)"
                )
            arrays.append(arr if arr.ndim == 3 else arr[..., None])
        return np.stack(arrays).transpose(0, 3, 1, 2)  # (N, C, H, W)
    ext = p.suffix.lower()
    if ext not in (".npy", ".npz"):
        raise DataFileError(
            f"data.path={p}: unknown extension {ext!r}; images are read from "
            f"{', '.join(IMAGE_FORMATS)}"
        )
    try:
        arr = np.load(p, allow_pickle=False) if ext == ".npy" else _array_from_npz(p, key)
    except DataFileError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise DataFileError(f"{p}: cannot be read as {ext} ({type(exc).__name__}: {exc})") from exc
    if arr.ndim == 3:
        arr = arr[:, None]
    if arr.ndim != 4:
        raise DataFileError(
            f"{p}: an array of shape {arr.shape}; images are (N, C, H, W), "
            f"(N, H, W, C) or (N, H, W)"
        )
    if arr.shape[-1] in (1, 2, 3, 4) and arr.shape[1] not in (1, 2, 3, 4):
        arr = arr.transpose(0, 3, 1, 2)  # channels last -> first
    return arr


def to_unit_range(arr: np.ndarray, p: Path) -> torch.Tensor:
    """uint8 -> [-1, 1]; floats in [0, 1] -> [-1, 1]; floats in [-1, 1] kept."""
    if arr.dtype == np.uint8:
        return torch.from_numpy(arr.astype(np.float32) / 127.5 - 1)
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataFileError(
            f"{p}: images of {arr.dtype}; give uint8 (0-255) or floats in [0, 1] or [-1, 1]"
        )
    if not np.isfinite(arr).all():
        raise DataFileError(
            f"{p}: {int((~np.isfinite(arr)).any(axis=(1, 2, 3)).sum())} images "
            f"hold NaN or infinite values; remove them"
        )
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 1:
        return torch.from_numpy(arr.astype(np.float32) * 2 - 1)
    if lo >= -1 and hi <= 1:
        return torch.from_numpy(arr.astype(np.float32))
    raise DataFileError(
        f"{p}: values from {lo:g} to {hi:g}; images must lie in [0, 1] or [-1, 1] (or be uint8)"
    )


class ImagesFromFiles(SnapshotSystem):
    """Images (N, C, H, W) in [-1, 1] from ``path``: a folder of PNGs (all one size and mode),
    or an .npy / .npz (``key``) array of (N, C, H, W), (N, H, W, C) or (N, H, W); uint8 or floats
    in [0, 1] or [-1, 1]. ``channels`` and ``size``, when given, are checked."""

    cache_data = True

    def __init__(
        self,
        path: str,
        key: str | None = None,
        channels: int | None = None,
        size: int | None = None,
        min_images: int = 8,
    ):
        p = _existing(path, "file or folder")
        self.path = str(path)
        x = to_unit_range(_image_array(p, key), p)
        n, c, h, w = x.shape
        if channels is not None and c != channels:
            raise DataFileError(
                f"{p}: {c}-channel images; data.channels={channels} (drop the "
                f"setting to take the file's)"
            )
        if h != w or (size is not None and h != size):
            raise DataFileError(
                f"{p}: {h}x{w} images; the image score model needs square "
                f"images" + (f" of data.size={size}" if size else "")
            )
        if h % 4:
            raise DataFileError(
                f"{p}: {h}x{w} images; the U-Net halves the size twice, so it "
                f"must be a multiple of 4 (crop or pad them)"
            )
        if n < min_images:
            raise DataFileError(f"{p}: {n} images; at least {min_images} are needed")
        log.info("Images from %s: %d of %d channel(s), %dx%d, in [-1, 1]", p, n, c, h, w)
        self.images = x
        # what the creature tracker (callbacks=creatures) reads where the images are scatters:
        # the canvas size and the background colour (the median pixel: scatters are mostly
        # background); there is no icon
        self.canvas, self.icon, self.icon_name = h, None, p.stem or p.name
        self.background = tuple(
            float(v) for v in (x.flatten(2).median(-1).values.median(0).values + 1) / 2
        )

    def generate(self, generator: torch.Generator) -> Snapshots:
        c = self.images.shape[1]
        return Snapshots(self.images, torch.zeros(c), torch.ones(c))
