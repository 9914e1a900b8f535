"""Artificial life (docs/method.md §6): the training-free flow as an SDE on a large canvas, the
creatures it makes tracked, their speeds and polarisation."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from eqflow import plots
from eqflow.dynamics.integrators import sde_heun
from eqflow.metrics import census
from eqflow.metrics.tracking import (
    detect,
    foreground,
    link,
    motion_statistics,
    reference_blobs,
    typical_area,
)
from eqflow.protocols.base import Measurement, Protocol


class Creatures(Protocol):
    """Artificial life (docs/method.md §6): run the flow as the irreversible Langevin SDE on a canvas
    ``scale`` times the training canvas from uniform noise in [-1, 1], keep the denoised frames
    x0_hat smoothed by an EMA, find and track the creatures, and report their speeds and
    polarisation; a GIF and an MP4 with the tracks, and the Figure 5 panels.

    The EMA runs over the kept frames with decay ``ema ** frame_every``, the same smoothing
    per unit time as an EMA over every step.

    ``start``: ``noise`` (published: uniform in [-1, 1]) or ``data``: a ``scale`` x ``scale``
    mosaic of training scatters noised to the score's level, so the creatures exist from the
    first frame and the run shows how they move rather than how they form.

    Only blobs of a creature's size are tracked: ``area_range`` times the typical (area-weighted
    median) blob area of ``reference_images`` training scatters. ``creatures/count_ratio``
    compares the creatures found per frame with the training scatters' density on the larger
    canvas: near 1 when the flow keeps a population of icons, near 0 when it turns them into
    something else."""

    STARTS = ("noise", "data")

    name = "creatures"

    def __init__(self, scale: int = 2, steps: int = 2000, dt: float = 0.05,
                 eta: float = 0.1, ema: float = 0.99, frame_every: int = 10,
                 threshold: float = 0.25, min_area: int = 4, max_step: float | None = None,
                 min_track_frames: int = 5, start: str = "noise",
                 area_range: tuple[float, float] | None = (0.5, 2.0), reference_images: int = 32):
        if start not in self.STARTS:
            raise ValueError(f"callbacks.creatures.start={start!r}: choose one of {self.STARTS}")
        if area_range is not None and not (len(area_range) == 2 and 0 <= area_range[0] < area_range[1]):
            raise ValueError(f"callbacks.creatures.area_range={area_range!r}: give [low, high] with "
                             f"0 <= low < high (multiples of a training creature's area), or null "
                             f"to count blobs of every size")
        self.start, self.area_range, self.reference_images = start, area_range, reference_images
        self.scale, self.steps, self.dt, self.eta, self.ema = scale, steps, dt, eta, ema
        self.frame_every, self.threshold, self.min_area = frame_every, threshold, min_area
        self.max_step, self.min_track_frames = max_step, min_track_frames

    def start_state(self, images: torch.Tensor, size: int, alpha: torch.Tensor,
                    g: torch.Generator) -> torch.Tensor:
        """The SDE's (1, C, size, size) start: uniform noise, or a mosaic of training images
        noised as x_t = sqrt(a) x0 + sqrt(1 - a) eps."""
        c, h, w = images.shape[1:]
        if self.start == "noise":
            return torch.rand(1, c, size, size, generator=g) * 2 - 1
        rows, cols = -(-size // h), -(-size // w)
        pick = torch.randint(0, len(images), (rows * cols,), generator=g)
        tiles = images[pick].float().cpu().reshape(rows, cols, c, h, w)
        mosaic = tiles.permute(2, 0, 3, 1, 4).reshape(c, rows * h, cols * w)[:, :size, :size]
        eps = torch.randn(mosaic.shape, generator=g)
        return (alpha.sqrt() * mosaic + (1 - alpha).sqrt() * eps).unsqueeze(0)

    def whole_creatures(self, system, frames, rgb, background, size: int, max_step: float,
                        g: torch.Generator) -> tuple[dict, np.ndarray]:
        """Shape integrity, survival and collective behaviour of the whole creatures
        (:mod:`eqflow.metrics.census`), and the whole creatures' centres in the last frame;
        empty for scatters read from files (no icon to match)."""
        if getattr(system, "icon", None) is None or not hasattr(system, "place"):
            return {}, np.empty((0, 2))
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))
        ref = census.reference(system, self.reference_images, rng, self.threshold)
        masks = [foreground(rgb(f), background, self.threshold) for f in frames]
        centres, integrity = census.whole_creatures(masks, ref)
        stats = census.census_statistics(centres, integrity, ref, size,
                                         self.dt * self.frame_every, max_step,
                                         self.min_track_frames, rng)
        return stats, centres[-1] if centres else np.empty((0, 2))

    def measure(self, flow, data, generator, figures: Path | None) -> Measurement:
        system = data.system
        size = int(system.canvas * self.scale)
        g = generator
        x0 = self.start_state(data.x, size, flow.score_model.alpha.cpu(), g).to(flow.device)
        decay = self.ema ** self.frame_every
        frames, state = [], {"ema": None}

        def keep(k: int, x: torch.Tensor) -> None:
            if k % self.frame_every:
                return
            x0_hat = flow.score_model.denoise(x).clamp(-1, 1)
            state["ema"] = x0_hat if state["ema"] is None else decay * state["ema"] + (1 - decay) * x0_hat
            frames.append(state["ema"][0].cpu())

        sde_heun(lambda x, s: flow.apply_D(s), flow.score, x0, self.dt, self.steps, self.eta,
                 generator=g, callback=keep, drift_from_score=True)
        background = tuple(float(c) for c in system.background)

        def rgb(image: torch.Tensor) -> np.ndarray:
            return (image.float().cpu().numpy().transpose(1, 2, 0) + 1) / 2

        # a creature is a blob of the size the training scatters' creatures have: fragments and
        # merged textures (stripes, a half-formed pattern) are not followed
        reference = reference_blobs([rgb(x) for x in data.x[:self.reference_images]],
                                    background, self.threshold, self.min_area)
        ref_area = typical_area(np.concatenate(reference))
        low, high = self.min_area, np.inf
        if self.area_range is not None:
            low, high = max(self.min_area, self.area_range[0] * ref_area), self.area_range[1] * ref_area
        # as many creatures as the training scatters hold per pixel (counted the same way)
        expected = float(np.mean([((a >= low) & (a <= high)).sum() for a in reference])) * self.scale ** 2
        detections = [detect(foreground(rgb(f), background, self.threshold), low, high)
                      for f in frames]
        if self.max_step:
            max_step = self.max_step
        elif getattr(system, "icon", None) is not None:
            max_step = max(system.icon.shape[:2]) / 2
        else:  # images from files: about half the width of a creature of the typical area
            max_step = 0.7 * math.sqrt(ref_area)
        tracks = link(detections, (size, size), max_step)
        stats = motion_statistics(tracks, (size, size), self.dt * self.frame_every,
                                  self.min_track_frames)
        mean_count = float(np.mean([len(d) for d in detections]))
        whole, last_whole = self.whole_creatures(system, frames, rgb, background, size, max_step, g)
        out = Measurement({
            **{f"creatures/{k}": v for k, v in whole.items() if k not in census.CURVES_FOR_FIGURES},
            "creatures/mean_speed": stats["mean_speed"],
            "creatures/mean_path_speed": stats["mean_path_speed"],
            "creatures/polarisation": stats["polarisation"],
            "creatures/n_tracks": stats["n_tracks"],
            "creatures/track_speeds": stats["track_speeds"],
            "creatures/mean_count": mean_count,
            "creatures/expected_count": expected,
            "creatures/count_ratio": mean_count / expected if expected else float("nan"),
            "creatures/reference_area": ref_area})
        if figures is None:
            return out
        if whole:
            times = [self.dt * self.frame_every * k for k in range(len(frames))]
            out.figures["figures/creatures_integrity"] = plots.curves(
                {"whole creatures / expected": whole["whole_share_curve"],
                 "mean integrity of creature-sized blobs": whole["integrity_curve"]},
                figures / "creatures_integrity.png", "time", "share / IoU",
                f"Whole creatures (integrity >= {whole['whole_threshold']:.2f})",
                x={"whole creatures / expected": times, "mean integrity of creature-sized blobs": times})
            out.figures["figures/creatures_whole"] = plots.creature_strip(
                system.icon, rgb(frames[-1]), last_whole, figures / "creatures_whole.png",
                f"whole creatures in the last frame ({len(last_whole)})")
            out.figures["figures/creatures_pair_correlation"] = plots.curves(
                {"simulation (last quarter)": whole["g"], "training scatters": whole["g_training"]},
                figures / "creatures_pair_correlation.png", "r (pixels)", "g(r)",
                "Pair correlation of whole creatures",
                x={"simulation (last quarter)": whole["g_r"], "training scatters": whole["g_r"]})
        for path in plots.tracked_animation(frames, tracks, figures / "creatures.gif"):
            out.videos[f"figures/creatures_{path.suffix.lstrip('.')}"] = path
        out.figures["figures/creatures"] = plots.creatures_figure(
            system.icon, data.x[0], frames, tracks, figures / "creatures.png",
            f"{system.icon_name}: mean speed {stats['mean_speed']:.3g} px per unit time, "
            f"polarisation {stats['polarisation']:.2f}")
        return out
