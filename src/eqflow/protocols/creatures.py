"""Artificial life (docs/method.md §6): the training-free flow as an SDE on a large canvas, the
creatures it makes tracked, their speeds and polarisation."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch

from eqflow import plots
from eqflow.dynamics.integrators import sde_heun
from eqflow.io.storage import atomic_write
from eqflow.metrics import census
from eqflow.metrics.tracking import (
    detect,
    foreground,
    frame_background,
    link,
    motion_statistics,
    reference_blobs,
    typical_area,
)
from eqflow.models.score import noise_to_level
from eqflow.protocols.base import Measurement, Protocol
from eqflow.protocols.langevin import flow_content_share, flow_stiffness, flow_translation_share
from eqflow.settings import Rule, check_setting

# The whole-creature reference (threshold, expected count) is drawn from a stream of its own,
# the same in every run, so that runs of one score model share one denominator.
REFERENCE_SEED = 20_261_207
TRANSLATION_IMAGES = 32  # training scatters the flow's rigid-motion share is read on
STIFFNESS_IMAGES = 16  # and its stiffness


class Creatures(Protocol):
    """Artificial life (docs/method.md §6): run the flow as the irreversible Langevin SDE on a
    canvas ``scale`` times the training canvas from ``start``, keep the denoised
    frames x0_hat smoothed by an EMA, find and track the creatures, and report their speeds and
    polarisation; a GIF and an MP4 with the tracks, and the Figure 5 panels.

    The EMA runs over the kept frames with decay ``ema ** frame_every``, the same smoothing
    per unit time as an EMA over every step.

    ``start``: ``noise`` (published: uniform in [-1, 1]); ``scatter``: a fresh scatter drawn
    by the data system on the simulation canvas at the training density (every creature placed
    on its own), noised to the score's level; or ``data``: one training scatter tiled ``scale``
    x ``scale`` times and noised (any image data; the tiles start as copies of each other and
    stay alike where the flow is slow). With ``scatter`` and ``data`` the creatures exist from
    the first frame and the run shows how they move and whether they last, not how they form.

    Only blobs of a creature's size are tracked: ``area_range`` times the typical (area-weighted
    median) blob area of ``reference_images`` training scatters. ``creatures/count_ratio``
    compares the creatures found per frame with the training scatters' density on the larger
    canvas: near 1 when the flow keeps a population of icons, near 0 when it turns them into
    something else."""

    STARTS = ("noise", "scatter", "data", "sampler")
    SUBSTEPS = Rule("count_or_auto")
    INTEGRITY_FRAMES = ("denoised", "smoothed")
    CALIBRATIONS = ("denoised", "clean")
    BACKGROUNDS = ("data", "frame")

    name = "creatures"

    def __init__(
        self,
        scale: int = 2,
        steps: int = 2000,
        dt: float = 0.05,
        eta: float = 0.1,
        ema: float = 0.99,
        frame_every: int = 10,
        threshold: float = 0.25,
        min_area: int = 4,
        max_step: float | None = None,
        min_track_frames: int = 5,
        link_memory: int = 0,
        start: str = "noise",
        area_range: tuple[float, float] | None = (0.5, 2.0),
        reference_images: int = 32,
        whole_reference_images: int = 256,
        integrity_frames: str = "denoised",
        calibration: str = "denoised",
        background: str = "data",
        substeps: int | str = "auto",
    ):
        check_setting("measure.creatures.substeps", substeps, self.SUBSTEPS)
        if start not in self.STARTS:
            raise ValueError(f"measure.creatures.start={start!r}: choose one of {self.STARTS}")
        if background not in self.BACKGROUNDS:
            raise ValueError(
                f"measure.creatures.background={background!r}: choose one of {self.BACKGROUNDS}"
            )
        if integrity_frames not in self.INTEGRITY_FRAMES or calibration not in self.CALIBRATIONS:
            raise ValueError(
                f"measure.creatures.integrity_frames={integrity_frames!r} and "
                f"calibration={calibration!r}: choose from {self.INTEGRITY_FRAMES} "
                f"and {self.CALIBRATIONS}"
            )
        if area_range is not None and not (
            len(area_range) == 2 and 0 <= area_range[0] < area_range[1]
        ):
            raise ValueError(
                f"measure.creatures.area_range={area_range!r}: give [low, high] with "
                f"0 <= low < high (multiples of a training creature's area), or null "
                f"to count blobs of every size"
            )
        self.start, self.area_range, self.reference_images = start, area_range, reference_images
        self.whole_reference_images = whole_reference_images
        self.scale, self.steps, self.dt, self.eta, self.ema = scale, steps, dt, eta, ema
        self.frame_every, self.threshold, self.min_area = frame_every, threshold, min_area
        self.max_step, self.min_track_frames = max_step, min_track_frames
        self.link_memory = link_memory
        self.integrity_frames, self.calibration = integrity_frames, calibration
        self.background, self.substeps = background, substeps

    def mask(self, frame: np.ndarray, data_background: tuple) -> np.ndarray:
        """Creature pixels of ``frame`` (H, W, 3): those farther than ``threshold`` from the
        data's background colour, or (``background=frame``) from the frame's own median colour,
        which follows a background that drifts."""
        bg = frame_background(frame) if self.background == "frame" else data_background
        return foreground(frame, bg, self.threshold)

    def start_state(
        self,
        images: torch.Tensor,
        size: int,
        alpha: torch.Tensor,
        g: torch.Generator,
        system=None,
        score_model=None,
    ) -> torch.Tensor:
        """The SDE's (1, C, size, size) start: the score model's own samples at its level
        (:meth:`sampler_state`); uniform noise; a fresh scatter drawn by the data
        ``system`` (:meth:`scatter_state`); or one training scatter of ``images`` tiled over
        the canvas and noised to the level ``alpha``. The scatters are periodic, so copies of
        one join without a seam; tiles of different scatters would cut every creature that
        crosses a tile's edge (most of them, for icons half the canvas wide)."""
        c, h, w = images.shape[1:]
        if self.start == "sampler":
            return self.sampler_state(score_model, size, g)
        if self.start == "noise":
            return torch.rand(1, c, size, size, generator=g) * 2 - 1
        if self.start == "scatter":
            return self.scatter_state(system, size, alpha, g)
        pick = int(torch.randint(0, len(images), (1,), generator=g))
        reps = (-(-size // h), -(-size // w))
        mosaic = images[pick].float().cpu().repeat(1, *reps)[:, :size, :size]
        return noise_to_level(mosaic, alpha, g).unsqueeze(0)

    @staticmethod
    def sampler_state(score_model, size: int, g: torch.Generator) -> torch.Tensor:
        """A (1, C, size, size) canvas drawn by the score model's ancestral sampler from pure
        noise down to the level the flow reads: creatures formed by the model, at its density.
        Needs a score trained on every noise level."""
        if score_model is None or not getattr(score_model, "trains_every_level", False):
            raise ValueError(
                "measure.creatures.start=sampler draws the start with the score model's sampler "
                "from pure noise, which needs a score trained on every noise level: set "
                "score.model.train_timesteps=null, or keep the band and spread a share of the "
                "draws over every level (score.model.every_level_share=0.25, as "
                "experiment=alife does), or use start=scatter or start=noise"
            )
        level = int(score_model.hparams.timestep)
        return score_model.sample(1, size, g, stop_at=level).cpu()

    @staticmethod
    def scatter_state(system, size: int, alpha: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """A (1, 3, size, size) scatter drawn by the artificial-life data ``system`` on a
        ``size``-pixel canvas with as many icons per pixel as its training scatters, noised to
        the level ``alpha``."""
        if not hasattr(system, "place"):
            raise ValueError(
                f"measure.creatures.start=scatter draws icons with the artificial-life data "
                f"system (data=alife); {type(system).__name__} has none: use "
                f"measure.creatures.start=data (tiled training images) or start=noise"
            )
        big = copy.copy(system)
        big.canvas = size
        big.n_icons = max(1, round(system.n_icons * (size / system.canvas) ** 2))
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))
        x0 = torch.from_numpy(big.place(rng)[0].transpose(2, 0, 1).copy()).float() * 2 - 1
        return noise_to_level(x0, alpha, g).unsqueeze(0)

    def simulate(self, flow, data, g: torch.Generator, substeps: int = 1) -> tuple[list, list]:
        """The SDE from the start, ``substeps`` Heun steps of dt / substeps a step: every
        ``frame_every`` steps the denoised state x0_hat, and the same smoothed by the EMA (what
        the animation shows)."""
        size = int(data.system.canvas * self.scale)
        alpha = flow.score_model.alpha.cpu()
        x0 = self.start_state(
            data.x, size, alpha, g, system=data.system, score_model=flow.score_model
        ).to(flow.device)
        decay = self.ema**self.frame_every
        smoothed, denoised, state = [], [], {"ema": None}

        def keep(k: int, x: torch.Tensor) -> None:
            if k % (self.frame_every * substeps):
                return
            x0_hat = flow.score_model.denoise(x).clamp(-1, 1)
            state["ema"] = (
                x0_hat if state["ema"] is None else decay * state["ema"] + (1 - decay) * x0_hat
            )
            smoothed.append(state["ema"][0].cpu())
            denoised.append(x0_hat[0].cpu())

        sde_heun(
            flow.drift,
            flow.score,
            x0,
            self.dt / substeps,
            self.steps * substeps,
            self.eta,
            generator=g,
            callback=keep,
            drift_from_score=True,
        )
        return smoothed, denoised

    def seen_through(self, score_model, g: torch.Generator):
        """``image -> image`` ((H, W, 3) in [0, 1]) as the simulation's frames see a creature:
        noised to the score's level and denoised by the score model (``calibration=denoised``),
        or None (``clean``: the placed icons as they are)."""
        if self.calibration == "clean":
            return None
        alpha = score_model.alpha.cpu()

        def seen(image: np.ndarray) -> np.ndarray:
            x0 = torch.from_numpy(image).float().permute(2, 0, 1)[None] * 2 - 1
            xt = noise_to_level(x0, alpha, g)
            with torch.no_grad():
                out = score_model.denoise(xt.to(score_model.device)).clamp(-1, 1)
            return (out[0].float().cpu().numpy().transpose(1, 2, 0) + 1) / 2

        return seen

    def whole_creatures(
        self,
        system,
        frames,
        background,
        size: int,
        max_step: float,
        g: torch.Generator,
        seen_as=None,
    ) -> tuple[dict, list[np.ndarray]]:
        """Shape integrity, survival and collective behaviour of the whole creatures
        (:mod:`eqflow.metrics.census`), and the whole creatures' centres in every frame;
        empty for scatters read from files (no icon to match)."""
        if getattr(system, "icon", None) is None or not hasattr(system, "place"):
            return {}, []
        ref = census.reference(
            system,
            self.whole_reference_images,
            np.random.default_rng(REFERENCE_SEED),
            self.threshold,
            seen_as=seen_as,
        )
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=g)))
        masks = [self.mask(_rgb(f), background) for f in frames]
        centres, integrity = census.whole_creatures(masks, ref)
        stats = census.census_statistics(
            centres,
            integrity,
            ref,
            size,
            self.dt * self.frame_every,
            max_step,
            self.min_track_frames,
            rng,
            memory=self.link_memory,
        )
        return stats, centres

    def creature_blobs(self, data, frames, background) -> tuple[list, float, float]:
        """Blobs of a creature's size in each frame (``area_range`` times the typical blob of
        the training scatters: fragments and merged textures are not followed), the typical
        area, and the number per frame the training scatters' density predicts."""
        reference = reference_blobs(
            [_rgb(x) for x in data.x[: self.reference_images]],
            background,
            self.threshold,
            self.min_area,
        )
        ref_area = typical_area(np.concatenate(reference))
        low, high = self.min_area, np.inf
        if self.area_range is not None:
            low, high = (
                max(self.min_area, self.area_range[0] * ref_area),
                self.area_range[1] * ref_area,
            )
        expected = (
            float(np.mean([((a >= low) & (a <= high)).sum() for a in reference])) * self.scale**2
        )
        detections = [detect(self.mask(_rgb(f), background), low, high) for f in frames]
        return detections, ref_area, expected

    def link_distance(self, system, ref_area: float) -> float:
        if self.max_step:
            return self.max_step
        if getattr(system, "icon", None) is not None:
            return max(system.icon.shape[:2]) / 2
        return 0.7 * math.sqrt(ref_area)  # scatters from files: half a typical creature's width

    def measure(self, flow, data, generator, figures: Path | None) -> Measurement:
        system, g = data.system, generator
        size = int(system.canvas * self.scale)
        stiffness = flow_stiffness(
            flow, data.x[:STIFFNESS_IMAGES], self.eta, self.dt, self.substeps, REFERENCE_SEED
        )
        frames, denoised = self.simulate(flow, data, g, stiffness["heun_substeps"])
        background = tuple(float(c) for c in system.background)
        detections, ref_area, expected = self.creature_blobs(data, frames, background)
        max_step = self.link_distance(system, ref_area)
        tracks = link(detections, (size, size), max_step, self.link_memory)
        stats = motion_statistics(
            tracks, (size, size), self.dt * self.frame_every, self.min_track_frames
        )
        mean_count = float(np.mean([len(d) for d in detections]))
        whole, whole_centres = self.whole_creatures(
            system,
            denoised if self.integrity_frames == "denoised" else frames,
            background,
            size,
            max_step,
            g,
            self.seen_through(flow.score_model, torch.Generator().manual_seed(REFERENCE_SEED)),
        )
        out = Measurement(
            {
                **{
                    f"creatures/{k}": v
                    for k, v in whole.items()
                    if k not in census.CURVES_FOR_FIGURES
                },
                "creatures/mean_speed": stats["mean_speed"],
                "creatures/mean_path_speed": stats["mean_path_speed"],
                "creatures/polarisation": stats["polarisation"],
                "creatures/n_tracks": stats["n_tracks"],
                "creatures/track_speeds": stats["track_speeds"],
                "creatures/mean_count": mean_count,
                "creatures/expected_count": expected,
                "creatures/count_ratio": mean_count / expected if expected else float("nan"),
                "creatures/reference_area": ref_area,
                **{f"creatures/{k}": v for k, v in stiffness.items()},
                # the share of the field a rigid translation explains (training scatters)
                "creatures/flow_translation_share": flow_translation_share(
                    flow, data.x[:TRANSLATION_IMAGES], REFERENCE_SEED
                ),
                # the share of its |v|^2 that moves the clean creatures (the rest stirs noise)
                "creatures/flow_content_share": flow_content_share(
                    flow, data.x[:TRANSLATION_IMAGES], REFERENCE_SEED
                ),
            }
        )
        if figures is not None:
            last_whole = whole_centres[-1] if whole_centres else np.empty((0, 2))
            self.draw(
                out, system, data, frames, denoised, tracks, stats, whole, last_whole, figures
            )
            if whole_centres:
                frame_dt = self.dt * self.frame_every
                save_centres(whole_centres, size, system, frame_dt, max_step, figures)
        return out

    def draw(
        self,
        out: Measurement,
        system,
        data,
        frames,
        denoised,
        tracks,
        stats,
        whole,
        last_whole,
        figures: Path,
    ) -> None:
        """The integrity, whole-creature and g(r) figures, the GIF and MP4 with tracks, and the
        Figure 5 panels."""
        if whole:
            times = [self.dt * self.frame_every * k for k in range(len(frames))]
            out.figures["figures/creatures_integrity"] = plots.curves(
                {
                    "whole creatures / expected": whole["whole_share_curve"],
                    "mean integrity of creature-sized blobs": whole["integrity_curve"],
                },
                figures / "creatures_integrity.png",
                "time",
                "share / IoU",
                f"Whole creatures (integrity >= {whole['whole_threshold']:.2f})",
                x={
                    "whole creatures / expected": times,
                    "mean integrity of creature-sized blobs": times,
                },
            )
            last = denoised[-1] if self.integrity_frames == "denoised" else frames[-1]
            out.figures["figures/creatures_whole"] = plots.creature_strip(
                system.icon,
                _rgb(last),
                last_whole,
                figures / "creatures_whole.png",
                f"whole creatures in the last frame ({len(last_whole)})",
            )
            out.figures["figures/creatures_travel"] = _travel_figure(whole, figures)
            out.figures["figures/creatures_pair_correlation"] = plots.curves(
                {"simulation (last quarter)": whole["g"], "training scatters": whole["g_training"]},
                figures / "creatures_pair_correlation.png",
                "r (pixels)",
                "g(r)",
                "Pair correlation of whole creatures",
                x={"simulation (last quarter)": whole["g_r"], "training scatters": whole["g_r"]},
            )
        for path in plots.tracked_animation(frames, tracks, figures / "creatures.gif"):
            out.videos[f"figures/creatures_{path.suffix.lstrip('.')}"] = path
        out.figures["figures/creatures"] = plots.creatures_figure(
            system.icon,
            data.x[0],
            frames,
            tracks,
            figures / "creatures.png",
            f"{system.icon_name}: mean speed {stats['mean_speed']:.3g} px per unit time, "
            f"polarisation {stats['polarisation']:.2f}",
        )


def save_centres(
    centres: list, size: int, system, frame_dt: float, max_step: float, figures: Path
) -> Path:
    """The whole creatures' centres of every frame, ``figures/creatures_whole_centres.npz``
    (``frame_<k>``: (n, 2) row, col; ``canvas``, ``body`` and the run's linking distance
    ``max_step`` in pixels, ``frame_dt``), so the tracks and travel can be read again with
    other linking settings without a new run."""
    frames = {f"frame_{k}": np.asarray(c, dtype=np.float64) for k, c in enumerate(centres)}
    body = float(max(system.icon.shape[:2]))
    return atomic_write(
        figures / "creatures_whole_centres.npz",
        lambda f: np.savez_compressed(
            f,
            canvas=size,
            body=body,
            max_step=max_step,
            frame_dt=frame_dt,
            frames=len(centres),
            **frames,
        ),
    )


def _travel_figure(whole: dict, figures: Path) -> Path:
    """A histogram of each whole creature's net travel, in body lengths."""
    return plots.histogram(
        {"whole creatures": whole["whole_travel_per_track"]},
        figures / "creatures_travel.png",
        "net travel over the track, body lengths",
        ylabel="tracks",
    )


def _rgb(image: torch.Tensor) -> np.ndarray:
    """A model-coordinate image (C, H, W) in [-1, 1] as (H, W, C) in [0, 1]."""
    return (image.float().cpu().numpy().transpose(1, 2, 0) + 1) / 2
