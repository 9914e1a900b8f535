"""Finding creatures in frames and following them (artificial life).

Detection: pixels farther than ``threshold`` from the background colour, connected components
by scikit-image, merged across the periodic edges, with circular-mean centroids; optionally
only blobs of a creature's size (an area range set from the training scatters). Linking:
optimal frame-to-frame assignment (scipy's Hungarian solver) on periodic distances, gated by
``max_step``, bridging up to ``memory`` frames without a detection. Statistics: per-track drift
speed (net displacement per unit time) and path speed, the group's means and the polarisation
|mean of unit velocity vectors| (1: all move the same way, ~0: no common direction).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.measure import label


def foreground(
    frame: np.ndarray, background=(1.0, 1.0, 1.0), threshold: float = 0.25
) -> np.ndarray:
    """(H, W) mask of pixels whose RGB (frame (H, W, 3) in [0, 1]) differs from the background."""
    diff = np.linalg.norm(frame - np.asarray(background)[None, None, :], axis=-1)
    return diff > threshold


def frame_background(frame: np.ndarray) -> tuple[float, float, float]:
    """The background colour of ``frame`` (H, W, 3) as its per-channel median: right while the
    background covers more than half the canvas, whatever colour it has drifted to."""
    return tuple(float(c) for c in np.median(frame.reshape(-1, frame.shape[-1]), axis=0))


def blob_pixels(mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (rows, cols) of the pixels of each connected blob of ``mask`` on a periodic canvas
    (a blob cut by an edge is one blob)."""
    labels = label(mask, connectivity=1)
    parent = list(range(labels.max() + 1))

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in [(labels[0], labels[-1]), (labels[:, 0], labels[:, -1])]:  # wrap the edges
        for x, y in zip(a, b):
            if x and y:
                parent[find(x)] = find(y)
    roots = np.array([find(i) for i in range(len(parent))])[labels]
    rows, cols = np.nonzero(mask)
    ids = roots[rows, cols]
    order = np.argsort(ids, kind="stable")
    splits = np.flatnonzero(np.diff(ids[order])) + 1
    return [(rows[sel], cols[sel]) for sel in np.split(order, splits)] if len(ids) else []


def blob_centre(rows: np.ndarray, cols: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A blob's centroid (row, col) on the torus (circular means)."""
    return np.array([_circular_mean(rows, size[0]), _circular_mean(cols, size[1])])


def blobs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centroids (n, 2) as (row, col) and areas (n,) of the connected blobs of ``mask`` on a
    periodic canvas (a blob cut by an edge counts once)."""
    found = blob_pixels(mask)
    centres = [blob_centre(r, c, mask.shape) for r, c in found]
    return (
        np.asarray(centres, dtype=np.float64).reshape(-1, 2),
        np.asarray([len(r) for r, _ in found], dtype=np.int64),
    )


def detect(mask: np.ndarray, min_area: int = 4, max_area: float | None = None) -> np.ndarray:
    """Centroids (n, 2) of the blobs of ``mask`` whose area lies in [min_area, max_area]."""
    centres, areas = blobs(mask)
    keep = areas >= min_area
    if max_area is not None:
        keep &= areas <= max_area
    return centres[keep]


def reference_blobs(
    images, background=(1.0, 1.0, 1.0), threshold: float = 0.25, min_area: int = 4
) -> list[np.ndarray]:
    """The areas of the blobs (``min_area`` or more) in each training image ((H, W, 3) in
    [0, 1]): what the creatures look like to the detector."""
    areas = []
    for image in images:
        _, found = blobs(foreground(image, background, threshold))
        areas.append(found[found >= min_area])
    return areas


def typical_area(areas: np.ndarray) -> float:
    """The area-weighted median: the size of the blob a random foreground pixel belongs to, so
    an icon's small detached parts (an eye, a spot) do not set the size of a creature."""
    areas = np.sort(np.asarray(areas, dtype=np.float64))
    if not len(areas):
        return float("nan")
    cumulative = np.cumsum(areas)
    return float(areas[np.searchsorted(cumulative, cumulative[-1] / 2)])


def _circular_mean(coords: np.ndarray, period: int) -> float:
    angle = coords * (2 * np.pi / period)
    mean = np.arctan2(np.sin(angle).mean(), np.cos(angle).mean())
    return float((mean * period / (2 * np.pi)) % period)


def periodic_delta(a: np.ndarray, b: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """b - a on the torus, each component in [-size/2, size/2)."""
    period = np.asarray(size, dtype=np.float64)
    return (b - a + period / 2) % period - period / 2


@dataclass
class Track:
    start: int  # frame index of the first position
    positions: list = field(default_factory=list)  # one per frame from start on
    bridged: int = 0  # positions filled in across frames where the creature was not detected
    missed: int = field(default=0, repr=False)  # frames missed since the last detection

    @property
    def end(self) -> int:
        return self.start + len(self.positions) - 1

    def extend(self, point: np.ndarray, size: tuple[int, int]) -> None:
        """Append ``point``, first bridging the ``missed`` frames before it by positions on
        the straight (periodic) way from the last detection to it."""
        last = np.asarray(self.positions[-1], dtype=np.float64)
        delta = periodic_delta(last, np.asarray(point, dtype=np.float64), size)
        period = np.asarray(size, dtype=np.float64)
        for k in range(1, self.missed + 1):
            self.positions.append((last + delta * k / (self.missed + 1)) % period)
        self.bridged += self.missed
        self.missed = 0
        self.positions.append(point)


def link(
    detections: list[np.ndarray], size: tuple[int, int], max_step: float, memory: int = 0
) -> list[Track]:
    """Tracks through the frames; a detection farther than ``max_step`` from every open track
    starts a new one. A track that finds no detection stays open for ``memory`` frames (gap
    closing: a creature not detected for a frame or two, say a shape that dipped below the
    whole threshold, is still the same creature); the gate does not widen with the gap, so a
    track does not jump to a neighbour. The frames a track missed are filled in on the straight
    way from its last detection to its next, so every track holds one position a frame
    (``Track.bridged`` counts the filled ones)."""
    tracks: list[Track] = []
    open_tracks: list[Track] = []
    for t, points in enumerate(detections):
        matched_tracks, matched_points = set(), set()
        if open_tracks and len(points):
            last = np.array([tr.positions[-1] for tr in open_tracks])
            cost = np.linalg.norm(periodic_delta(last[:, None], points[None], size), axis=-1)
            for i, j in zip(*linear_sum_assignment(cost)):
                if cost[i, j] <= max_step:
                    open_tracks[i].extend(points[j], size)
                    matched_tracks.add(i)
                    matched_points.add(j)
        for i, tr in enumerate(open_tracks):
            if i not in matched_tracks:
                tr.missed += 1
        open_tracks = [tr for tr in open_tracks if tr.missed <= memory]
        for j, p in enumerate(points):
            if j not in matched_points:
                track = Track(t, [p])
                tracks.append(track)
                open_tracks.append(track)
    return tracks


def _long_tracks_steps(
    tracks: list[Track], size: tuple[int, int], min_length: int
) -> list[tuple[int, np.ndarray]]:
    """``(start frame, frame-to-frame steps unwrapped across the periodic edges)`` of the
    tracks at least ``min_length`` frames long."""
    out = []
    for track in tracks:
        if len(track.positions) >= min_length:
            pos = np.asarray(track.positions, dtype=np.float64)
            out.append((track.start, periodic_delta(pos[:-1], pos[1:], size)))
    return out


def travel(
    tracks: list[Track], size: tuple[int, int], body: float, min_length: int = 5
) -> list[float]:
    """Each track's net displacement over its life (frame-to-frame steps unwrapped across the
    periodic edges, so a creature that crosses an edge keeps its way) in body lengths ``body``
    (pixels), for tracks at least ``min_length`` frames long: 0 for a still creature, k for one
    carried k body lengths."""
    steps = _long_tracks_steps(tracks, size, min_length)
    return [float(np.linalg.norm(s.sum(0)) / body) for _, s in steps]


def relative_travel(
    tracks: list[Track], size: tuple[int, int], body: float, min_length: int = 5
) -> list[float]:
    """Like :func:`travel`, but each step less the frame's common drift (the mean step of the
    tracks alive in that frame): 0 when the whole canvas moves rigidly (an exact equilibrium
    flow of any translation-invariant density, which carries every creature whole), and for a
    lone track; (1 - 1/n) k for one creature carried k body lengths among n - 1 still ones."""
    steps = _long_tracks_steps(tracks, size, min_length)
    total, count = {}, {}
    for start, s in steps:
        for k, step in enumerate(s, start):
            total[k] = total.get(k, 0.0) + step
            count[k] = count.get(k, 0) + 1
    out = []
    for start, s in steps:
        drift = np.array([total[k] / count[k] for k in range(start, start + len(s))])
        out.append(float(np.linalg.norm((s - drift).sum(0)) / body))
    return out


def motion_statistics(
    tracks: list[Track], size: tuple[int, int], dt: float, min_length: int = 5
) -> dict:
    """Speeds of the tracks at least ``min_length`` frames long, in pixels per unit time:

    - ``mean_speed``: net displacement over the track's duration (drift; detection jitter
      averages out), averaged over tracks;
    - ``mean_path_speed``: mean frame-to-frame step length (includes the jitter);
    - ``polarisation``: per frame, |mean of the unit step directions| over tracks, averaged.
    """
    speeds, path_speeds, per_frame = [], [], {}
    for start, steps in _long_tracks_steps(tracks, size, min_length):
        speeds.append(float(np.linalg.norm(steps.sum(0)) / (len(steps) * dt)))
        path_speeds.append(float(np.linalg.norm(steps, axis=1).mean() / dt))
        for k, step in enumerate(steps, start):
            norm = np.linalg.norm(step)
            if norm > 0:
                per_frame.setdefault(k, []).append(step / norm)
    polarisation = [
        float(np.linalg.norm(np.mean(v, axis=0))) for v in per_frame.values() if len(v) > 1
    ]
    return {
        "n_tracks": len(speeds),
        "track_speeds": speeds,
        "mean_speed": float(np.mean(speeds)) if speeds else float("nan"),
        "mean_path_speed": float(np.mean(path_speeds)) if path_speeds else float("nan"),
        "polarisation": float(np.mean(polarisation)) if polarisation else float("nan"),
    }
