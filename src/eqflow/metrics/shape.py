"""How whole a creature is: the best intersection-over-union of a blob's mask with the icon's.

The icon is composited over the background and thresholded exactly as frames are (so both masks
mean "pixels the detector sees"), turned through ``n_angles`` rotations, and each rotation is
centred on its centroid in a square patch. A blob is cut out around its periodic centroid into a
patch of the same size; its integrity is the largest IoU over the rotations and over shifts of
up to one pixel (centroid rounding). A detached head, a tail, or two halves merged score low; a
whole creature scores near what the training scatters' creatures reach. Blobs whose area is too
far from the icon's to reach ``floor`` (IoU <= smaller area / larger area) are not compared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import rotate

from eqflow.metrics.tracking import blob_centre, blob_pixels, foreground


def icon_mask(icon: np.ndarray, background, threshold: float) -> np.ndarray:
    """What the detector sees of an (h, w, 4) RGBA icon laid on the background."""
    alpha = icon[..., 3:4]
    rgb = alpha * icon[..., :3] + (1 - alpha) * np.asarray(background)[None, None, :]
    return foreground(rgb, background, threshold)


def centred(mask: np.ndarray, side: int) -> np.ndarray:
    """``mask`` in a (side, side) patch with its centroid on the patch's centre pixel."""
    rows, cols = np.nonzero(mask)
    out = np.zeros((side, side), dtype=bool)
    r = rows - int(round(rows.mean())) + side // 2
    c = cols - int(round(cols.mean())) + side // 2
    keep = (r >= 0) & (r < side) & (c >= 0) & (c < side)
    out[r[keep], c[keep]] = True
    return out


@dataclass
class ShapeTemplates:
    """The icon's mask turned through ``n_angles`` rotations, centred in (side, side) patches."""

    masks: np.ndarray  # (n_angles, side, side) bool
    area: int

    @classmethod
    def from_icon(
        cls, icon: np.ndarray, background, threshold: float, n_angles: int = 36
    ) -> "ShapeTemplates":
        mask = icon_mask(icon, background, threshold)
        side = int(math.ceil(math.hypot(*mask.shape))) + 4
        side += 1 - side % 2  # odd: one centre pixel
        turned = [
            rotate(mask.astype(np.float32), 360.0 * k / n_angles, order=1, reshape=True) > 0.5
            for k in range(n_angles)
        ]
        return cls(np.stack([centred(t, side) for t in turned]), int(mask.sum()))

    @property
    def side(self) -> int:
        return self.masks.shape[-1]

    def integrity(self, patch: np.ndarray) -> float:
        """Best IoU of a centred blob patch with any rotation, over shifts of up to 1 pixel."""
        best = 0.0
        t = self.masks
        t_area = t.sum(axis=(1, 2))
        b_area = int(patch.sum())
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                shifted = np.roll(patch, (dr, dc), axis=(0, 1))
                inter = (t & shifted[None]).sum(axis=(1, 2))
                best = max(best, float((inter / (t_area + b_area - inter)).max()))
        return best


def blob_patch(rows: np.ndarray, cols: np.ndarray, size: tuple[int, int], side: int) -> np.ndarray:
    """A blob's pixels (on a periodic canvas of ``size``) centred in a (side, side) patch. The
    centre is rounded to a pixel and the offsets wrapped in integers, so no two pixels merge."""
    centre = np.floor(blob_centre(rows, cols, size) + 0.5).astype(int)
    h, w = size
    r = (rows - centre[0] + h // 2) % h - h // 2 + side // 2
    c = (cols - centre[1] + w // 2) % w - w // 2 + side // 2
    out = np.zeros((side, side), dtype=bool)
    keep = (r >= 0) & (r < side) & (c >= 0) & (c < side)
    out[r[keep], c[keep]] = True
    return out


def frame_integrity(
    mask: np.ndarray, templates: ShapeTemplates, floor: float = 0.3, min_area: int = 4
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids (n, 2), areas (n,) and integrity (n,) of the blobs of a foreground mask; blobs
    whose area rules out an IoU of ``floor`` get integrity 0 without a comparison."""
    centres, areas, scores = [], [], []
    for rows, cols in blob_pixels(mask):
        area = len(rows)
        if area < min_area:
            continue
        centres.append(blob_centre(rows, cols, mask.shape))
        areas.append(area)
        ratio = min(area, templates.area) / max(area, templates.area)
        scores.append(
            templates.integrity(blob_patch(rows, cols, mask.shape, templates.side))
            if ratio >= floor
            else 0.0
        )
    return (
        np.asarray(centres, dtype=np.float64).reshape(-1, 2),
        np.asarray(areas),
        np.asarray(scores, dtype=np.float64),
    )


def whole_threshold(reference_scores: np.ndarray, quantile: float = 0.05) -> float:
    """The integrity that ``1 - quantile`` of the training scatters' creatures reach: blobs at or
    above it count as whole creatures."""
    scores = np.asarray(reference_scores, dtype=np.float64)
    scores = scores[scores > 0]
    if not len(scores):
        return float("nan")
    return float(np.quantile(scores, quantile))
