"""Whole creatures, counted frame by frame and compared with the training scatters.

The threshold for "whole" is calibrated on creatures known to be whole: icons placed by the data
system itself (each with its own mask; the blob the detector finds for an icon that touches no
other), measured as the detector sees the simulation's frames
(``seen_as``: e.g. noised to the score's level and denoised by the score model); a blob whose
integrity (:mod:`eqflow.metrics.shape`) reaches what ``1 - quantile`` of those reach is a whole
creature. The expected number per frame is how many whole creatures the detector finds in
training scatters (touching icons merge there too), per pixel, times the simulation's area.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from eqflow.metrics.collective import (
    nearest_neighbour_distances,
    order_parameters,
    pair_correlation,
)
from eqflow.metrics.shape import ShapeTemplates, blob_patch, frame_integrity
from eqflow.metrics.tracking import (
    Track,
    blob_pixels,
    foreground,
    link,
    motion_statistics,
    relative_travel,
    travel,
)

# census_statistics' values that go to figures only (not metrics.json)
CURVES_FOR_FIGURES = ("g_r", "g", "g_training")


@dataclass
class Reference:
    """What whole creatures look like in the training scatters."""

    templates: ShapeTemplates
    threshold: float  # integrity of a whole creature
    whole_per_pixel: float  # whole creatures the detector finds per pixel
    centres: list[np.ndarray] = field(default_factory=list)  # per scatter
    canvas: int = 0
    body: float = 0.0  # a body length: the icon's size in pixels


def reference(
    system,
    n_images: int,
    rng: np.random.Generator,
    fg_threshold: float,
    quantile: float = 0.05,
    seen_as=None,
) -> Reference:
    """Calibrate on ``n_images`` fresh scatters of an icon system (one with ``place``), each
    passed through ``seen_as(image) -> image`` ((H, W, 3) in [0, 1]) first when it is given."""
    background = system.background
    templates = ShapeTemplates.from_icon(system.icon, background, fg_threshold)
    own, scatters = [], []
    for _ in range(n_images):
        image, masks = system.place(rng)
        if seen_as is not None:
            image = seen_as(image)
        seen = foreground(image, background, fg_threshold)
        scatters.append(seen)
        own += placed_integrity(seen, masks, templates)
    threshold = float(np.quantile(own, quantile)) if own else float("nan")
    centres, count = [], 0
    for seen in scatters:
        c, _, score = frame_integrity(seen, templates)
        centres.append(c[score >= threshold])
        count += int((score >= threshold).sum())
    area = float(system.canvas) ** 2
    body = float(max(system.icon.shape[:2]))
    return Reference(
        templates, threshold, count / (n_images * area), centres, int(system.canvas), body
    )


def placed_integrity(
    seen: np.ndarray, masks: list[np.ndarray], templates: ShapeTemplates, other_share: float = 0.05
) -> list[float]:
    """The integrity of each placed icon as the detector sees it: the blob of the foreground
    ``seen`` that covers most of the icon's mask, measured whole (with whatever the view spills
    around the icon). Icons whose blob also holds more than ``other_share`` of pixels of other
    icons are left out: touching icons make one blob of two, which is not one creature."""
    blobs = blob_pixels(seen)
    out = []
    for k, mask in enumerate(masks):
        if not blobs:
            break
        rows, cols = max(blobs, key=lambda b: int(mask[b[0], b[1]].sum()))
        others = sum(int(m[rows, cols].sum()) for j, m in enumerate(masks) if j != k)
        if mask[rows, cols].any() and others <= other_share * len(rows):
            out.append(templates.integrity(blob_patch(rows, cols, seen.shape, templates.side)))
    return out


def whole_creatures(
    masks: list[np.ndarray], ref: Reference
) -> tuple[list[np.ndarray], list[float]]:
    """Per frame: the centroids of the whole creatures, and the mean integrity of the blobs of
    about a creature's size (0 where there are none)."""
    centres, mean_integrity = [], []
    for mask in masks:
        c, _, score = frame_integrity(mask, ref.templates)
        centres.append(c[score >= ref.threshold])
        sized = score[score > 0]
        mean_integrity.append(float(sized.mean()) if len(sized) else 0.0)
    return centres, mean_integrity


def survival(tracks: list[Track], frames: int) -> float:
    """The share of whole-creature detections whose track spans at least ``frames`` frames
    (bridged frames count towards the span, not as detections)."""
    total = sum(len(t.positions) - t.bridged for t in tracks)
    kept = sum(len(t.positions) - t.bridged for t in tracks if len(t.positions) >= frames)
    return kept / total if total else float("nan")


def _finite_mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def travel_statistics(
    tracks: list[Track], body: float, size: int, min_track_frames: int, late: np.ndarray
) -> dict:
    """Each whole creature's net travel over its track in body lengths (0 with no track), its
    mean and median, the mean net of the frames' common drift (a rigid motion of the whole
    canvas travels 0 by it: :func:`relative_travel`), and the sweep target: whole share late x
    mean travel (0 for still creatures and for none whole)."""
    bodies = travel(tracks, (size, size), body, min_track_frames)
    relative = relative_travel(tracks, (size, size), body, min_track_frames)
    mean = float(np.mean(bodies)) if bodies else 0.0
    return {
        "whole_travel_bodies": mean,
        "whole_travel_bodies_relative": float(np.mean(relative)) if relative else 0.0,
        "whole_travel_bodies_median": float(np.median(bodies)) if bodies else 0.0,
        "whole_travel_per_track": bodies,
        "whole_bodies_travelled": float(np.mean(late)) * mean if len(late) else float("nan"),
    }


def census_statistics(
    centres: list[np.ndarray],
    mean_integrity: list[float],
    ref: Reference,
    size: int,
    dt: float,
    max_step: float,
    min_track_frames: int,
    rng: np.random.Generator,
    survival_frames: int = 10,
    memory: int = 0,
) -> dict:
    """The whole-creature numbers of a run (names as they go into metrics.json, without the
    ``creatures/`` prefix) and the curves for the figures; tracks bridge up to ``memory``
    frames where a creature is not whole (:func:`eqflow.metrics.tracking.link`)."""
    expected = ref.whole_per_pixel * size * size
    share = (
        np.asarray([len(c) for c in centres], dtype=np.float64) / expected
        if expected
        else (np.full(len(centres), np.nan))
    )
    late = share[-max(1, len(share) // 4) :]
    tracks = link(centres, (size, size), max_step, memory)
    motion = motion_statistics(tracks, (size, size), dt, min_track_frames)
    order = order_parameters(
        [t for t in tracks if len(t.positions) >= min_track_frames], (size, size), rng
    )
    r_max = min(ref.canvas, size) / 2 - 1
    r, g = pair_correlation(centres[-max(1, len(centres) // 4) :], (size, size), r_max)
    _, g_train = pair_correlation(ref.centres, (ref.canvas, ref.canvas), r_max)
    contact = r < 1.5 * np.sqrt(ref.templates.area)
    nn = np.concatenate(
        [nearest_neighbour_distances(c, (size, size)) for c in centres[-len(late) :]]
        or [np.empty(0)]
    )
    nn_train = np.concatenate(
        [nearest_neighbour_distances(c, (ref.canvas, ref.canvas)) for c in ref.centres]
        or [np.empty(0)]
    )
    nan = float("nan")
    return {
        "whole_threshold": ref.threshold,
        "whole_expected": expected,
        "whole_share": float(np.mean(share)) if len(share) else nan,
        "whole_share_late": float(np.mean(late)) if len(late) else nan,
        "whole_share_curve": share.tolist(),
        "integrity_curve": list(mean_integrity),
        f"whole_survival_{survival_frames}": survival(tracks, survival_frames),
        "whole_tracks": motion["n_tracks"],
        "whole_mean_speed": motion["mean_speed"],
        **travel_statistics(tracks, ref.body, size, min_track_frames, late),
        **{f"whole_{k}": v for k, v in order.items()},
        "whole_nn_distance": float(nn.mean()) if len(nn) else nan,
        "whole_nn_distance_training": float(nn_train.mean()) if len(nn_train) else nan,
        "whole_g_short": _finite_mean(g[contact]),
        "whole_g_short_training": _finite_mean(g_train[contact]),
        "g_r": r.tolist(),
        "g": g.tolist(),
        "g_training": g_train.tolist(),
    }
