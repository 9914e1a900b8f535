"""Artificial-life scatters: placement, wrap-around, determinism, icons and their errors."""

import numpy as np
import pytest
import torch
from PIL import Image

from eqflow.data.alife import AlifeSystem, wrapped_indices
from eqflow.data.icons import BUILTIN, load_icon
from eqflow.metrics.tracking import foreground
from eqflow.stages.data import file_fingerprints


@pytest.mark.parametrize("icon", BUILTIN)
def test_placed_masks_never_overlap(icon):
    system = AlifeSystem(icon, canvas=48, icon_size=24, n_icons=12, attempts=3, progress=False)
    rng = np.random.default_rng(0)
    for _ in range(5):
        image, masks = system.place(rng)
        assert masks, "nothing was placed"
        assert np.sum(masks, axis=0).max() == 1  # every pixel belongs to at most one icon
        assert image.shape == (48, 48, 3) and image.min() >= 0 and image.max() <= 1
        # away from every icon (2 pixels beyond its mask, on the torus) the canvas is background
        near = np.sum(masks, axis=0) > 0
        near = np.any(
            [np.roll(near, (dy, dx), (0, 1)) for dy in range(-2, 3) for dx in range(-2, 3)], axis=0
        )
        assert (image[~near] == 1.0).all()


def test_icons_wrap_around_the_edges():
    rows, cols = wrapped_indices(-3, 30, 6, 6, 32, 32)
    assert rows.tolist() == [29, 30, 31, 0, 1, 2] and cols.tolist() == [30, 31, 0, 1, 2, 3]
    system = AlifeSystem("dot", canvas=32, icon_size=16, n_icons=40, attempts=4, progress=False)
    full_size = (load_icon("dot", 16)[..., 3] > 0.5).sum()
    wrapped = 0
    for seed in range(10):
        _, masks = system.place(np.random.default_rng(seed))
        for m in masks:  # an icon cut by an edge shows on both sides of the canvas
            if (m[0].any() and m[-1].any()) or (m[:, 0].any() and m[:, -1].any()):
                wrapped += 1
                # and it is whole: as many pixels as an icon placed in the middle
                assert m.sum() == pytest.approx(full_size, rel=0.15)
    assert wrapped > 0


def test_same_seed_same_dataset_and_range():
    system = AlifeSystem("firefly", canvas=32, icon_size=16, n_samples=6, progress=False)
    a = system.generate(torch.Generator().manual_seed(3))
    b = system.generate(torch.Generator().manual_seed(3))
    c = system.generate(torch.Generator().manual_seed(4))
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert a.x.shape == (6, 3, 32, 32) and a.x.min() >= -1 and a.x.max() <= 1


def test_builtin_icons_have_alpha_and_the_firefly_is_asymmetric():
    for name in BUILTIN:
        icon = load_icon(name, 32)
        assert icon.shape == (32, 32, 4) and icon[..., 3].any()
    fly = load_icon("firefly", 32)[..., :3]
    assert not np.allclose(fly, fly[:, ::-1]) and not np.allclose(fly, fly[::-1, ::-1])
    dot = load_icon("dot", 32)[..., :3]
    assert np.allclose(dot, dot[:, ::-1]) and np.allclose(dot, dot[::-1])


def test_bad_icons_get_errors_that_name_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="RGBA PNG"):
        load_icon(str(tmp_path / "missing.png"))
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match="not an image"):
        load_icon(str(tmp_path / "notes.png"))
    Image.new("RGB", (20, 20), (255, 0, 0)).save(tmp_path / "opaque.png")
    with pytest.raises(ValueError, match="no alpha channel"):
        load_icon(str(tmp_path / "opaque.png"))
    rgba = Image.new("RGBA", (40, 20), (0, 0, 0, 0))
    rgba.paste((0, 200, 0, 255), (5, 5, 35, 15))
    rgba.save(tmp_path / "ok.png")
    icon = load_icon(str(tmp_path / "ok.png"), 16)
    assert icon.shape == (8, 16, 4)
    with pytest.raises(ValueError, match="larger than the 16-pixel canvas"):
        AlifeSystem(str(tmp_path / "ok.png"), canvas=16, icon_size=16, progress=False)


def test_cache_key_follows_the_icons_bytes(tmp_path):
    path = tmp_path / "icon.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 255)).save(path)
    first = file_fingerprints({"icon": str(path), "canvas": 64})
    Image.new("RGBA", (8, 8), (255, 0, 0, 255)).save(path)
    assert file_fingerprints({"icon": str(path), "canvas": 64}) != first
    assert file_fingerprints({"icon": "firefly"}) == {}


def test_tracker_recovers_a_disc_that_moves_across_the_edge():
    from eqflow.metrics.tracking import detect, foreground, link, motion_statistics

    size, radius, dt = 40, 4, 0.5
    yy, xx = np.mgrid[0:size, 0:size]
    true = [np.array([20.0 + 0.5 * k, (30.0 + 2.0 * k) % size]) for k in range(12)]
    detections = []
    for centre in true:
        dy = (yy - centre[0] + size / 2) % size - size / 2
        dx = (xx - centre[1] + size / 2) % size - size / 2
        frame = np.ones((size, size, 3))
        frame[dy**2 + dx**2 <= radius**2] = (0.1, 0.2, 0.8)
        detections.append(detect(foreground(frame)))
        assert len(detections[-1]) == 1  # one blob, even when the edge cuts it in two
    (track,) = link(detections, (size, size), max_step=5)
    found = np.array(track.positions)
    err = (found - np.array(true) + size / 2) % size - size / 2
    assert np.abs(err).max() < 0.3
    stats = motion_statistics([track], (size, size), dt)
    assert stats["mean_speed"] == pytest.approx(np.hypot(0.5, 2.0) / dt, rel=0.05)
    assert stats["mean_path_speed"] == pytest.approx(stats["mean_speed"], rel=0.05)  # straight
    # jitter raises the path speed, not the drift speed
    rng = np.random.default_rng(0)
    shaky = [p + rng.normal(0, 1.5, 2) for p in found]  # jitter comparable to a step
    from eqflow.metrics.tracking import Track

    noisy = motion_statistics([Track(0, shaky)], (size, size), dt)
    assert noisy["mean_path_speed"] > 1.2 * noisy["mean_speed"]
    assert noisy["mean_speed"] == pytest.approx(stats["mean_speed"], rel=0.15)
    # a second disc moving the opposite way: two tracks, no common direction
    other = [np.array([5.0, (20.0 - 2.0 * k) % size]) for k in range(12)]
    both = [np.vstack([a, b]) for a, b in zip(detections, other)]
    tracks = link(both, (size, size), max_step=5)
    assert len(tracks) == 2
    assert motion_statistics(tracks, (size, size), dt)["polarisation"] < 0.3


def test_linking_memory_bridges_missed_frames_across_the_periodic_edge():
    from eqflow.metrics.tracking import link, travel

    size = 40
    true = [np.array([10.0, (34.0 + 1.0 * k) % size]) for k in range(12)]  # crosses the edge
    seen = [p[None] if k not in (5, 6) else np.empty((0, 2)) for k, p in enumerate(true)]
    assert len(link(seen, (size, size), max_step=5)) == 2  # a track ends at its first miss
    assert len(link(seen, (size, size), max_step=5, memory=1)) == 2  # two misses: too many
    (track,) = link(seen, (size, size), max_step=5, memory=2)
    assert track.start == 0 and track.end == 11 and track.bridged == 2
    np.testing.assert_allclose(np.array(track.positions), np.array(true), atol=1e-9)
    assert travel([track], (size, size), body=5.5) == pytest.approx([2.0])
    # the gate does not widen over a gap: a creature 6 pixels on after two misses is another
    jump = [*seen[:5], np.empty((0, 2)), np.empty((0, 2)), *(p[None] + 5 for p in true[7:])]
    assert len(link(jump, (size, size), max_step=5, memory=2)) == 2
    # a track that finds nothing more is not padded at the end
    (short,) = link(seen[:7], (size, size), max_step=5, memory=2)
    assert short.end == 4 and short.bridged == 0


def test_only_blobs_of_a_creatures_size_are_detected():
    from eqflow.metrics.tracking import blobs, detect, foreground, reference_blobs, typical_area
    from eqflow.protocols import Creatures

    size = 48
    yy, xx = np.mgrid[0:size, 0:size]

    def canvas(discs):
        frame = np.ones((size, size, 3))
        for (r, c), radius in discs:
            frame[(yy - r) ** 2 + (xx - c) ** 2 <= radius**2] = 0.0
        return frame

    def disc_area(radius):
        return int(((yy - 20) ** 2 + (xx - 20) ** 2 <= radius**2).sum())

    # training creatures: discs of radius 3, each with two detached radius-1 "eyes" of 5 pixels
    training = [
        canvas(
            [
                ((10, 10), 3),
                ((10, 16), 1),
                ((16, 10), 1),
                ((30, 30), 3),
                ((30, 36), 1),
                ((36, 30), 1),
            ]
        ),
        canvas([((20, 30), 3), ((20, 36), 1), ((26, 30), 1)]),
    ]
    areas = reference_blobs(training)
    assert [sorted(a.tolist()) for a in areas] == [[5, 5, 5, 5, 29, 29], [5, 5, 29]]
    assert disc_area(3) == 29 and np.median(np.concatenate(areas)) == 5  # the plain median: eyes
    assert typical_area(np.concatenate(areas)) == 29
    assert typical_area(np.array([2, 2, 10])) == 10 and typical_area(np.array([3])) == 3
    # a creature, a speck and a merged stripe: only the creature is in 0.5-2 x its area
    frame = canvas([((10, 10), 3), ((30, 5), 1)])
    frame[40:44, :] = 0.0
    _, found = blobs(foreground(frame))
    assert sorted(found) == sorted([disc_area(3), 5, 4 * size])
    area = disc_area(3)
    kept = detect(foreground(frame), 0.5 * area, 2.0 * area)
    np.testing.assert_allclose(kept, [[10.0, 10.0]])
    assert len(detect(foreground(frame))) == 3  # no upper bound: every blob of 4 pixels or more
    with pytest.raises(ValueError, match="measure.creatures.area_range"):
        Creatures(area_range=(2.0, 0.5))


@pytest.mark.slow
def test_tiny_alife_run_tracks_creatures_and_writes_the_animation(tmp_path):
    from helpers import TINY_ALIFE, compose_train

    from eqflow import pipeline

    cfg = compose_train(
        [*TINY_ALIFE, "icon=dot", "measure.creatures.steps=40"], tmp_path, tiny=False
    )
    assert cfg.data.icon == "dot"
    result = pipeline.train(cfg)
    m = result.metrics
    assert m["creatures/n_tracks"] == len(m["creatures/track_speeds"])
    assert m["creatures/mean_count"] >= 0
    assert m["creatures/reference_area"] > 0 and m["creatures/expected_count"] > 0
    assert m["creatures/count_ratio"] == pytest.approx(
        m["creatures/mean_count"] / m["creatures/expected_count"]
    )
    figs = result.output_dir / "figures"
    assert (figs / "creatures.gif").exists() and (figs / "creatures.png").exists()
    assert (figs / "creatures.mp4").stat().st_size > 0 and (
        figs / "creatures_integrity.png"
    ).exists()
    assert (figs / "creatures_whole.png").exists()
    assert 0 < m["creatures/whole_threshold"] <= 1 and m["creatures/whole_share_late"] >= 0
    # the whole creatures' centres of every frame, kept to relink without a new run
    with np.load(figs / "creatures_whole_centres.npz") as saved:
        counts = [len(saved[f"frame_{k}"]) for k in range(int(saved["frames"]))]
        assert int(saved["canvas"]) == 64 and float(saved["body"]) == 12.0
    expected = m["creatures/whole_expected"]
    assert counts == [round(s * expected) for s in m["creatures/whole_share_curve"]]
    assert isinstance(m[cfg.optimized_metric], float)  # what a sweeper is given
    # evaluate.py on it: the speed table by icon
    import subprocess
    import sys
    from pathlib import Path

    from omegaconf import OmegaConf

    (result.output_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, result.output_dir / ".hydra" / "config.yaml")
    out = tmp_path / "eval"
    proc = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            f"sweep={result.output_dir}",
            f"hydra.run.dir={out}",
            "logger=none",
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    import math

    runs = "1" if math.isfinite(float(m["creatures/mean_speed"])) else "1 (0 with tracks)"
    assert f"| dot | {runs} |" in (out / "creatures.md").read_text()
    report = (out / "report.md").read_text()
    assert f"| dot | {result.output_dir.name} | {cfg.seed} | " in report.split("## Per run")[1]


def test_scatter_start_places_icons_at_the_training_density_on_the_larger_canvas():
    from eqflow.protocols import Creatures

    system = AlifeSystem(icon="dot", canvas=32, icon_size=8, n_icons=6, progress=False)
    g = torch.Generator().manual_seed(0)
    x = Creatures.scatter_state(system, 64, torch.tensor(1.0), g)  # alpha 1: no noise
    assert x.shape == (1, 3, 64, 64) and x.min() >= -1 and x.max() <= 1
    # the share of creature pixels (off the white background) is the training scatters'
    covered = (x[0] < 0.8).any(0).float().mean().item()
    rng = np.random.default_rng(0)
    training = np.mean([(system.place(rng)[0] < 0.9).any(-1).mean() for _ in range(40)])
    assert covered == pytest.approx(training, rel=0.2)
    # not copies: the four 32-pixel quarters differ
    assert not torch.allclose(x[..., :32, :32], x[..., 32:, :32])


def test_scatter_start_needs_artificial_life_data():
    from eqflow.protocols import Creatures

    class Images:
        canvas = 32

    with pytest.raises(ValueError, match="start=data"):
        Creatures.scatter_state(Images(), 64, torch.tensor(1.0), torch.Generator())


def test_creature_run_can_start_from_a_mosaic_of_training_scatters(tmp_path):
    from eqflow.protocols import Creatures

    images = torch.arange(3 * 2 * 4 * 4, dtype=torch.float32).reshape(3, 2, 4, 4)
    cb = Creatures(start="data")
    g = torch.Generator().manual_seed(0)
    x = cb.start_state(images, 8, torch.tensor(1.0), g)  # alpha 1: no noise
    assert x.shape == (1, 2, 8, 8)
    for i in (0, 4):  # every 4 x 4 tile is the same whole training image
        for j in (0, 4):
            tile = x[0, :, i : i + 4, j : j + 4]
            assert any(torch.equal(tile, img) for img in images)
    assert torch.equal(x[0, :, :4, :4], x[0, :, 4:, 4:])  # one scatter: no seams
    noised = cb.start_state(images, 8, torch.tensor(0.9), torch.Generator().manual_seed(0))
    residual = (noised - 0.9**0.5 * x) / 0.1**0.5  # the same tiles, plus unit Gaussian noise
    assert 0.7 < float(residual.std()) < 1.3
    published = Creatures().start_state(images, 8, torch.tensor(1.0), g)
    assert published.abs().max() <= 1 and published.std() > 0.4  # uniform noise in [-1, 1]
    with pytest.raises(ValueError, match="noise"):
        Creatures(start="zeros")


@pytest.mark.slow
def test_the_sampler_start_is_the_score_models_own_sample_at_the_flows_level():
    from eqflow.models.image_score import ImageScoreModule
    from eqflow.protocols import Creatures

    kw = dict(channels=3, block_out_channels=[8, 16], norm_num_groups=4, timestep=10)
    every_level = ImageScoreModule(**kw).eval()
    x = Creatures.sampler_state(every_level, 16, torch.Generator().manual_seed(0))
    assert x.shape == (1, 3, 16, 16) and torch.isfinite(x).all()
    # the same stream, sampled on to the clean end, passes through that state: not clamped,
    # and not the clean sample
    clean = every_level.sample(1, 16, torch.Generator().manual_seed(0))
    assert not torch.allclose(x, clean)
    again = every_level.sample(1, 16, torch.Generator().manual_seed(0), stop_at=10)
    assert torch.equal(x, again)
    band_only = ImageScoreModule(**kw, train_timesteps=[0, 20]).eval()
    with pytest.raises(ValueError, match="score.model.train_timesteps=null"):
        Creatures.sampler_state(band_only, 16, torch.Generator())


class EmpiricalOracle:
    """The exact v-prediction of a score model whose data are ``images`` (N, C, H, W), each with
    equal weight: x0_hat is the posterior mean of the training images given x_t. A test score
    with every noise level, free of training noise."""

    def __init__(self, images: torch.Tensor, alphas_cumprod: torch.Tensor):
        self.images, self.alphas = images.double(), alphas_cumprod.double()

    def __call__(self, x: torch.Tensor, t) -> torch.Tensor:
        a = self.alphas[int(t)]
        d2 = ((x.double()[:, None] - a.sqrt() * self.images[None]) ** 2).flatten(2).sum(-1)
        w = torch.softmax(-d2 / (2 * (1 - a)), dim=1)
        x0_hat = torch.einsum("bn,nchw->bchw", w, self.images)
        return ((a.sqrt() * x.double() - x0_hat) / (1 - a).sqrt()).to(x.dtype)


def _blurred(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> (H, W, C) in [0, 1], averaged over 3 x 3 periodic neighbours:
    a view of a noisy frame that does not know the data (the oracle would project anything,
    noise included, onto a training image)."""
    mean = sum(torch.roll(x, (dy, dx), (-2, -1)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)) / 9
    return ((mean.permute(1, 2, 0).numpy() + 1) / 2).clip(0, 1)


@pytest.mark.slow
def test_the_sampler_start_holds_creatures_at_the_training_density():
    from eqflow.metrics import census
    from eqflow.models.image_score import ImageScoreModule
    from eqflow.protocols import Creatures

    system = AlifeSystem("firefly", canvas=48, icon_size=12, progress=False)
    rng = np.random.default_rng(0)
    train = torch.stack(
        [torch.from_numpy(system.place(rng)[0]).permute(2, 0, 1) for _ in range(64)]
    )
    score = ImageScoreModule(channels=3, block_out_channels=[8, 16], norm_num_groups=4, timestep=5)
    score.predict = lambda x, t, network=None: oracle(x, t)
    oracle = EmpiricalOracle(train.float() * 2 - 1, score.alphas_cumprod)
    a = float(score.alpha)
    g = torch.Generator().manual_seed(1)

    def noised_view(image: np.ndarray) -> np.ndarray:  # a training scatter as the frames are seen
        x0 = torch.from_numpy(image).permute(2, 0, 1).float() * 2 - 1
        return _blurred(a**0.5 * x0 + (1 - a) ** 0.5 * torch.randn(x0.shape, generator=g))

    ref = census.reference(system, 48, np.random.default_rng(1), 0.25, seen_as=noised_view)
    starts = [Creatures.sampler_state(score.eval(), 48, g)[0] for _ in range(32)]
    masks = [foreground(_blurred(x), system.background, 0.25) for x in starts]
    found = np.mean([len(c) for c in census.whole_creatures(masks, ref)[0]])
    expected = ref.whole_per_pixel * 48**2
    assert expected > 3  # the check has creatures to count
    assert found / expected == pytest.approx(1.0, abs=0.3)
    # what it tells apart: the model's noise level itself, not yet denoised, holds none
    noise = [torch.randn(3, 48, 48, generator=g) for _ in range(8)]
    masks = [foreground(_blurred(x), system.background, 0.25) for x in noise]
    assert np.mean([len(c) for c in census.whole_creatures(masks, ref)[0]]) < 0.2 * expected


def test_relink_script_reads_a_runs_saved_centres(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "relink_creatures.py"
    spec = importlib.util.spec_from_file_location("relink_creatures", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    size, body = 40, 8.0
    frames = {
        f"frame_{k}": np.array([[10.0, (34.0 + 1.0 * k) % size]])
        if k not in (5, 6)
        else np.empty((0, 2))
        for k in range(12)
    }
    (tmp_path / "figures").mkdir()
    np.savez(
        tmp_path / "figures" / "creatures_whole_centres.npz",
        canvas=size,
        body=body,
        frame_dt=0.5,
        frames=12,
        **frames,
    )
    (tmp_path / "metrics.json").write_text(json.dumps({"creatures/whole_share_late": 0.5}))
    strict, bridged = (script.relink(tmp_path, memory, 5) for memory in (0, 2))
    assert strict["tracks"] == 2 and bridged["tracks"] == 1
    assert bridged["travel"] == pytest.approx(11 / body)
    assert bridged["bodies_travelled"] == pytest.approx(0.5 * 11 / body)
    assert bridged["speed"] == pytest.approx(1.0 / 0.5)
