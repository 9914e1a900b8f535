"""Artificial-life scatters (docs/method.md §5): copies of one icon on a periodic canvas.

Each image starts as the background colour; ``n_icons`` placements are tried, each with up to
``attempts`` random (rotation, centre) draws. A draw is accepted only if its alpha mask
(alpha > 0.5) overlaps no mask placed before; the icon wraps around the canvas edges. RGB is
stored in [-1, 1] as (N, 3, H, W).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import rotate

from eqflow.data.base import Snapshots, SnapshotSystem, check_data_settings
from eqflow.data.icons import load_icon


def wrapped_indices(top: int, left: int, h: int, w: int, height: int, width: int):
    """Row and column indices of an (h, w) patch at (top, left) on a periodic canvas."""
    return (top + np.arange(h)) % height, (left + np.arange(w)) % width


class AlifeSystem(SnapshotSystem):
    cache_data = True

    def __init__(
        self,
        icon: str = "firefly",
        canvas: int = 64,
        icon_size: int = 32,
        n_icons: int = 10,
        attempts: int = 2,
        n_samples: int = 512,
        background: tuple[float, float, float] = (1.0, 1.0, 1.0),
        progress: bool = True,
    ):
        check_data_settings(
            canvas=canvas,
            icon_size=icon_size,
            n_icons=n_icons,
            attempts=attempts,
            n_samples=n_samples,
        )
        if len(background) != 3 or not all(0 <= c <= 1 for c in background):
            raise ValueError(
                f"data.background must be three numbers in [0, 1] (RGB), got {list(background)}"
            )
        self.icon_name = icon
        self.icon = load_icon(icon, icon_size)
        h, w = self.icon.shape[:2]
        diagonal = math.ceil(math.hypot(h, w))
        if diagonal > canvas:
            raise ValueError(
                f"icon of {h} x {w} pixels turns within a {diagonal}-pixel square, "
                f"larger than the {canvas}-pixel canvas; lower data.icon_size or "
                f"raise data.canvas"
            )
        self.canvas, self.n_icons, self.attempts = canvas, n_icons, attempts
        self.n_samples, self.progress = n_samples, progress
        self.background = np.asarray(background, dtype=np.float64)
        self.dim = 3

    def place(self, rng: np.random.Generator) -> tuple[np.ndarray, list[np.ndarray]]:
        """One scatter: the (H, W, 3) image in [0, 1] and the full-canvas mask of each placed
        icon."""
        size = self.canvas
        image = np.broadcast_to(self.background, (size, size, 3)).copy()
        occupied = np.zeros((size, size), dtype=bool)
        masks = []
        for _ in range(self.n_icons):
            for _ in range(self.attempts):
                turned = np.clip(
                    rotate(self.icon, rng.uniform(0, 360), axes=(1, 0), order=1, reshape=True), 0, 1
                )
                mask = turned[..., 3] > 0.5
                h, w = mask.shape
                rows, cols = wrapped_indices(
                    int(rng.integers(size)) - h // 2,
                    int(rng.integers(size)) - w // 2,
                    h,
                    w,
                    size,
                    size,
                )
                cells = np.ix_(rows, cols)
                if (occupied[cells] & mask).any():
                    continue
                alpha = turned[..., 3:4]
                image[cells] = alpha * turned[..., :3] + (1 - alpha) * image[cells]
                occupied[cells] |= mask
                full = np.zeros((size, size), dtype=bool)
                full[cells] = mask
                masks.append(full)
                break
        return image, masks

    def generate(self, generator: torch.Generator) -> Snapshots:
        from tqdm.auto import trange

        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator)))
        images = np.empty((self.n_samples, 3, self.canvas, self.canvas), dtype=np.float32)
        for i in trange(
            self.n_samples, desc=f"scatters of {self.icon_name}", disable=not self.progress
        ):
            images[i] = self.place(rng)[0].transpose(2, 0, 1)
        return Snapshots(torch.from_numpy(images) * 2 - 1, torch.tensor(0.5), torch.tensor(0.5))
