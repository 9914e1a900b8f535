"""Collective behaviour of tracked creatures on a torus, each number beside its null.

- Polarisation: per frame, |mean unit heading| over the creatures moving in it (1: all move the
  same way). Milling: per frame, |mean (r_i x u_i) / |r_i||, r_i the offset from the group's
  periodic centre (1: all circle it the same way round). Their null shuffles the headings
  across creatures and frames (each frame keeps its creatures and its count), so a value above
  the null's 95th percentile means the headings are aligned beyond what n independent headings
  give by chance.
- Spacing: the nearest-neighbour distance of every creature, and the pair correlation g(r)
  (freud's RDF in a periodic box; 1 for an ideal gas) accumulated over frames. Against the
  training scatters' g(r): a peak at short r above theirs means attraction, a hole repulsion.
"""

from __future__ import annotations

import numpy as np

from eqflow.metrics.tracking import Track, periodic_delta


def headings_by_frame(
    tracks: list[Track], size: tuple[int, int], min_length: int = 2
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{frame: (positions (n, 2), unit headings (n, 2))} of the tracks moving in each frame."""
    out: dict[int, tuple[list, list]] = {}
    for track in tracks:
        if len(track.positions) < min_length:
            continue
        pos = np.asarray(track.positions, dtype=np.float64)
        steps = periodic_delta(pos[:-1], pos[1:], size)
        norms = np.linalg.norm(steps, axis=1)
        for k in np.flatnonzero(norms > 0):
            p, u = out.setdefault(track.start + int(k), ([], []))
            p.append(pos[k])
            u.append(steps[k] / norms[k])
    return {t: (np.asarray(p), np.asarray(u)) for t, (p, u) in out.items() if len(u) > 1}


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _order(frames, size) -> tuple[float, float]:
    pol, mill = [], []
    for positions, headings in frames:
        pol.append(np.linalg.norm(headings.mean(0)))
        centre = _periodic_centre(positions, size)
        r = periodic_delta(centre[None], positions, size)
        norm = np.linalg.norm(r, axis=1, keepdims=True)
        mill.append(abs(_cross(r / np.where(norm > 0, norm, 1), headings).mean()))
    return float(np.mean(pol)), float(np.mean(mill))


def _periodic_centre(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    period = np.asarray(size, dtype=np.float64)
    angle = points * (2 * np.pi / period)
    mean = np.arctan2(np.sin(angle).mean(0), np.cos(angle).mean(0))
    return (mean * period / (2 * np.pi)) % period


def order_parameters(
    tracks: list[Track], size: tuple[int, int], rng: np.random.Generator, n_shuffles: int = 200
) -> dict[str, float]:
    """Polarisation and milling with their shuffled-heading nulls (mean and 95th percentile)."""
    by_frame = headings_by_frame(tracks, size)
    nan = float("nan")
    if not by_frame:
        return {
            k: nan
            for k in (
                "polarisation",
                "polarisation_null",
                "polarisation_null_q95",
                "milling",
                "milling_null",
                "milling_null_q95",
            )
        }
    frames = list(by_frame.values())
    pol, mill = _order(frames, size)
    pooled = np.concatenate([u for _, u in frames])
    counts = np.cumsum([len(u) for _, u in frames])[:-1]
    null = []
    for _ in range(n_shuffles):
        shuffled = np.split(pooled[rng.permutation(len(pooled))], counts)
        null.append(_order([(p, u) for (p, _), u in zip(frames, shuffled)], size))
    null = np.asarray(null)
    return {
        "polarisation": pol,
        "polarisation_null": float(null[:, 0].mean()),
        "polarisation_null_q95": float(np.quantile(null[:, 0], 0.95)),
        "milling": mill,
        "milling_null": float(null[:, 1].mean()),
        "milling_null_q95": float(np.quantile(null[:, 1], 0.95)),
    }


def nearest_neighbour_distances(points: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Each point's distance to its nearest other point on the torus (empty for < 2 points)."""
    if len(points) < 2:
        return np.empty(0)
    d = np.linalg.norm(periodic_delta(points[:, None], points[None], size), axis=-1)
    np.fill_diagonal(d, np.inf)
    return d.min(axis=1)


def pair_correlation(
    frames: list[np.ndarray], size: tuple[int, int], r_max: float, bins: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """g(r) of (row, col) points on a square torus of side ``size``, averaged over frames with
    at least two points: (bin centres, g). freud's RDF in a 2-D periodic box."""
    import freud

    if size[0] != size[1]:
        raise ValueError(f"pair_correlation needs a square canvas, got {size}")
    side = float(size[0])
    box = freud.box.Box.square(side)
    rdf = freud.density.RDF(bins=bins, r_max=r_max)
    used = 0
    for points in frames:
        if len(points) < 2:
            continue
        xyz = np.zeros((len(points), 3), dtype=np.float32)
        xyz[:, 0] = points[:, 1] - side / 2
        xyz[:, 1] = points[:, 0] - side / 2
        rdf.compute(system=(box, xyz), reset=used == 0)
        used += 1
    if not used:
        centres = (np.arange(bins) + 0.5) * r_max / bins
        return centres, np.full(bins, np.nan)
    return np.asarray(rdf.bin_centers), np.asarray(rdf.rdf)
