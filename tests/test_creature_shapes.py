"""Whole creatures and their collective behaviour: shape integrity against the icon, the
calibrated threshold, g(r), nearest neighbours, polarisation and milling against their nulls."""

import numpy as np
import pytest

from eqflow.data.alife import AlifeSystem
from eqflow.metrics import census
from eqflow.metrics.collective import (
    nearest_neighbour_distances,
    order_parameters,
    pair_correlation,
)
from eqflow.metrics.shape import blob_patch, frame_integrity
from eqflow.metrics.tracking import Track, blob_pixels, foreground, relative_travel, travel


@pytest.fixture(scope="module", params=["firefly", "taiji"])
def calibrated(request):
    system = AlifeSystem(icon=request.param, canvas=64, icon_size=32, progress=False)
    return system, census.reference(system, 24, np.random.default_rng(0), 0.25)


def _placed(system, rng):
    image, masks = system.place(rng)
    return foreground(image, system.background, 0.25), masks


def test_a_training_creature_is_whole_and_half_of_one_is_not(calibrated):
    system, ref = calibrated
    assert 0.6 < ref.threshold < 1.0
    seen, masks = _placed(system, np.random.default_rng(1))
    rows, cols = max(blob_pixels(masks[0] & seen), key=lambda p: len(p[0]))
    whole = ref.templates.integrity(blob_patch(rows, cols, seen.shape, ref.templates.side))
    assert whole >= ref.threshold
    half = masks[0] & seen
    r, c = np.nonzero(half)
    cut = c < np.median(c)  # the left half of the creature as the canvas shows it
    half[r[cut], c[cut]] = False
    _, _, score = frame_integrity(half, ref.templates)
    assert score.max() < ref.threshold


def test_a_creature_across_the_periodic_edge_keeps_its_integrity(calibrated):
    system, ref = calibrated
    seen, masks = _placed(system, np.random.default_rng(2))
    alone = masks[0] & seen
    for shift in [(0, 0), (0, 37), (29, 51)]:  # moved so that it straddles the edges
        moved = np.roll(alone, shift, axis=(0, 1))
        _, _, score = frame_integrity(moved, ref.templates)
        assert score.max() == pytest.approx(frame_integrity(alone, ref.templates)[2].max())


def test_training_scatters_hold_the_expected_number_of_whole_creatures(calibrated):
    system, ref = calibrated
    rng = np.random.default_rng(3)
    masks = [_placed(system, rng)[0] for _ in range(24)]
    centres, _ = census.whole_creatures(masks, ref)
    share = np.mean([len(c) for c in centres]) / (ref.whole_per_pixel * system.canvas**2)
    assert share == pytest.approx(1.0, abs=0.25)


def test_pair_correlation_of_a_uniform_scatter_is_flat():
    rng = np.random.default_rng(0)
    n = 40
    r, g = pair_correlation([rng.uniform(0, 128, (n, 2)) for _ in range(300)], (128, 128), 40, 8)
    assert np.allclose(g, (n - 1) / n, atol=0.05)  # an ideal gas of n points
    assert r[0] == pytest.approx(2.5)


def test_pair_correlation_sees_a_hole_and_a_peak():
    rng = np.random.default_rng(0)
    lattice = np.stack(np.meshgrid(np.arange(0, 128, 16.0), np.arange(0, 128, 16.0)), -1)
    lattice = lattice.reshape(-1, 2)
    frames = [(lattice + rng.normal(0, 0.5, lattice.shape)) % 128 for _ in range(50)]
    r, g = pair_correlation(frames, (128, 128), 30, 15)
    assert g[r < 10].max() < 0.05 and g[np.abs(r - 16) < 2].max() > 2  # hole, then a shell


def test_nearest_neighbours_wrap_around_the_torus():
    d = nearest_neighbour_distances(np.array([[0.0, 0.0], [0.0, 127.0], [64.0, 64.0]]), (128, 128))
    assert d[:2] == pytest.approx([1.0, 1.0]) and d[2] == pytest.approx(np.hypot(64, 63))


def test_polarisation_of_parallel_tracks_is_one_and_of_random_walks_near_its_null():
    rng = np.random.default_rng(0)
    parallel = [
        Track(0, [np.array([10.0 * i, 5.0 + 2 * k]) % 128 for k in range(20)]) for i in range(10)
    ]
    assert order_parameters(parallel, (128, 128), rng, 20)["polarisation"] == pytest.approx(1.0)
    walks = []
    for _ in range(30):
        pos = [rng.uniform(0, 128, 2)]
        for _ in range(30):
            pos.append((pos[-1] + rng.normal(size=2) * 2) % 128)
        walks.append(Track(0, pos))
    got = order_parameters(walks, (128, 128), rng, 100)
    assert abs(got["polarisation"] - got["polarisation_null"]) < 0.03
    assert got["polarisation"] <= got["polarisation_null_q95"]


def test_milling_of_creatures_circling_a_centre_is_one():
    tracks = []
    for i in range(12):
        phase = 2 * np.pi * i / 12
        angles = phase + 0.1 * np.arange(20)
        tracks.append(
            Track(0, [np.array([64 + 20 * np.sin(a), 64 + 20 * np.cos(a)]) for a in angles])
        )
    got = order_parameters(tracks, (128, 128), np.random.default_rng(0), 50)
    assert got["milling"] == pytest.approx(1.0, abs=0.01) and got["polarisation"] < 0.05


def test_speed_verdicts_pair_icons_seed_by_seed():
    from eqflow.analysis.creatures import paired_verdicts

    icons = {
        "firefly": {"seeds": [0, 1, 2, 3], "speed": [0.9, 0.5, 1.2, 0.7]},
        "dot": {"seeds": [0, 1, 2, 3], "speed": [0.3, 0.1, 0.8, 0.2]},
        "taiji": {"seeds": [0, 1, 2, 3], "speed": [0.2, 0.9, 0.1, 1.0]},
    }
    rows = {(r["a"], r["b"]): r for r in paired_verdicts(icons)}
    assert rows[("dot", "firefly")]["verdict"] == "firefly faster"  # 4 of 4 seeds, by 0.475
    assert rows[("dot", "firefly")]["mean_difference"] == pytest.approx(-0.475)
    assert rows[("firefly", "taiji")]["verdict"] == "undecided"


def test_whole_speed_verdicts_pair_only_seeds_where_both_icons_have_whole_creatures():
    from eqflow.analysis.creatures import paired_verdicts

    nan = float("nan")
    icons = {  # seed 4: no whole firefly (NaN); seed 2: no whole dot
        "firefly": {"seeds": [0, 1, 2, 3, 4], "whole_mean_speed": [0.4, 0.2, 0.3, 0.5, nan]},
        "dot": {"seeds": [0, 1, 2, 3, 4], "whole_mean_speed": [0.05, 0.03, nan, 0.04, 0.02]},
    }
    (row,) = paired_verdicts(icons, key="whole_mean_speed")
    assert row["n_units"] == 3  # seeds 0, 1 and 3
    assert row["mean_difference"] == pytest.approx(-(0.35 + 0.17 + 0.46) / 3)
    assert row["verdict"] == "too few seeds (< 4)"


def test_creatures_on_a_drifted_background_are_found_with_the_frames_own_background():
    from eqflow.metrics.tracking import blob_pixels
    from eqflow.protocols import Creatures

    frame = np.ones((32, 32, 3)) * np.array([0.75, 0.95, 0.8])  # white drifted to pale green
    yy, xx = np.mgrid[:32, :32]
    frame[(yy - 10) ** 2 + (xx - 20) ** 2 <= 16] = (0.1, 0.3, 0.9)  # a blue dot, 49 pixels
    white = (1.0, 1.0, 1.0)
    assert Creatures(background="data").mask(frame, white).all()  # one blob: the whole canvas
    (blob,) = blob_pixels(Creatures(background="frame").mask(frame, white))
    assert len(blob[0]) == 49
    with pytest.raises(ValueError, match="background"):
        Creatures(background="median")


def test_no_speed_verdict_on_too_few_seeds():
    from eqflow.analysis.creatures import MIN_VERDICT_SEEDS, paired_verdicts

    n = MIN_VERDICT_SEEDS - 1
    icons = {
        "firefly": {"seeds": list(range(n)), "speed": [1.0 + 0.1 * i for i in range(n)]},
        "dot": {"seeds": list(range(n)), "speed": [0.1 * i for i in range(n)]},
    }
    (row,) = paired_verdicts(icons)
    assert row["verdict"].startswith("too few seeds")
    assert row["mean_difference"] == pytest.approx(-1.0)  # the difference is still reported


def test_the_threshold_is_calibrated_through_the_same_view_as_the_frames():
    """seen_as is applied to the placed scatters before they are measured: the identity changes
    nothing, and a view that spills colour around the creatures (a blur) lowers what whole ones
    reach, since their blobs are measured as the detector sees them, spill included."""
    from scipy.ndimage import uniform_filter

    system = AlifeSystem(icon="firefly", canvas=64, icon_size=32, progress=False)
    plain = census.reference(system, 12, np.random.default_rng(0), 0.25)
    same = census.reference(system, 12, np.random.default_rng(0), 0.25, seen_as=lambda im: im)
    assert same.threshold == plain.threshold and same.whole_per_pixel == plain.whole_per_pixel

    def blurred(image):
        return uniform_filter(image, size=(5, 5, 1), mode="wrap")

    soft = census.reference(system, 12, np.random.default_rng(0), 0.25, seen_as=blurred)
    assert soft.threshold < plain.threshold - 0.02


def test_the_denoised_view_noises_to_the_score_level_and_denoises():
    import torch

    from eqflow.protocols import Creatures

    class Identity(torch.nn.Module):  # a perfect denoiser of this image would return it
        alpha = torch.tensor(0.945)
        device = torch.device("cpu")

        def denoise(self, x):
            return x / self.alpha.sqrt()  # x_t / sqrt(a): the noise scaled, not removed

    image = np.random.default_rng(0).uniform(0, 1, (16, 16, 3))
    seen = Creatures(calibration="denoised").seen_through(
        Identity(), torch.Generator().manual_seed(0)
    )
    out = seen(image)
    assert out.shape == image.shape and 0 <= out.min() and out.max() <= 1
    noise = (2 * out - 1) - np.clip(2 * image - 1, -1, 1)
    inside = np.abs(2 * out - 1) < 1  # not clamped
    sigma = np.sqrt((1 - 0.945) / 0.945)
    assert noise[inside].std() == pytest.approx(sigma, rel=0.2)
    assert Creatures(calibration="clean").seen_through(Identity(), None) is None
    with pytest.raises(ValueError, match="integrity_frames"):
        Creatures(integrity_frames="both")


def _census(frames, ref, size, memory=0):
    centres, integrity = census.whole_creatures(frames, ref)
    return census.census_statistics(
        centres,
        integrity,
        ref,
        size,
        dt=0.5,
        max_step=ref.body / 2,
        min_track_frames=5,
        rng=np.random.default_rng(0),
        memory=memory,
    )


def test_travel_is_zero_for_a_still_scatter(calibrated):
    system, ref = calibrated
    seen, _ = _placed(system, np.random.default_rng(4))
    stats = _census([seen] * 30, ref, system.canvas)
    assert stats["whole_tracks"] >= 1
    assert stats["whole_travel_bodies"] == 0.0
    assert stats["whole_bodies_travelled"] == 0.0  # the sweep target: whole but still scores 0


def _straight_track(start_xy, step_xy, frames: int) -> Track:
    start, step = np.asarray(start_xy, float), np.asarray(step_xy, float)
    return Track(0, [(start + k * step) % 64 for k in range(frames)])


def test_relative_travel_is_zero_for_a_rigid_motion_of_the_whole_canvas():
    # a rigid translation carries every creature whole: travel counts it, relative travel not
    tracks = [_straight_track(p, (0.0, 2.0), 41) for p in ((5, 5), (30, 40), (50, 20))]
    assert travel(tracks, (64, 64), 16.0) == pytest.approx([5.0] * 3)
    assert relative_travel(tracks, (64, 64), 16.0) == pytest.approx([0.0] * 3, abs=1e-12)


def test_relative_travel_of_one_swimmer_among_still_creatures():
    # one creature carried 5 body lengths (across the edge) among two still ones: its own
    # travel is 5 - 5/3 against the common drift of 5/3, the still ones' 5/3 each
    swimmer = _straight_track((5, 5), (2.0, 0.0), 41)
    still = [_straight_track(p, (0.0, 0.0), 41) for p in ((30, 40), (50, 20))]
    relative = relative_travel([swimmer, *still], (64, 64), 16.0)
    assert relative == pytest.approx([10 / 3, 5 / 3, 5 / 3])
    # a track that lives in part of the run is measured against the drift of its own frames
    late = Track(20, _straight_track((9, 9), (0.0, 0.0), 21).positions)
    assert relative_travel([swimmer, late], (64, 64), 16.0)[1] == pytest.approx(20 * 1 / 16)


@pytest.mark.parametrize("bodies", [1, 3])
def test_travel_counts_body_lengths_across_the_periodic_edge(calibrated, bodies):
    system, ref = calibrated
    seen, masks = _placed(system, np.random.default_rng(2))
    alone = masks[0] & seen
    step = 4  # pixels a frame, well inside the linking distance (half a body)
    n = int(bodies * ref.body) // step
    frames = [np.roll(alone, (k * step // 3, k * step), axis=(0, 1)) for k in range(n + 1)]
    stats = _census(frames, ref, system.canvas)
    assert ref.body == max(system.icon.shape[:2])
    assert stats["whole_tracks"] == 1
    expected = np.hypot(n * step // 3, n * step) / ref.body  # the net shift, wrapped k times
    assert stats["whole_travel_bodies"] == pytest.approx(expected, abs=0.02)
    assert stats["whole_travel_bodies"] >= bodies


def test_a_creature_broken_for_a_frame_travels_on_one_track_with_link_memory(calibrated):
    system, ref = calibrated
    seen, masks = _placed(system, np.random.default_rng(2))
    alone = masks[0] & seen
    step, n = 2, 24
    frames = [np.roll(alone, k * step, axis=1) for k in range(n + 1)]
    rows = np.flatnonzero(frames[12].any(axis=1))
    frames[12] = frames[12].copy()
    frames[12][rows[len(rows) // 2] :] = False  # half a creature in one frame: not whole
    strict, bridged = _census(frames, ref, system.canvas), _census(frames, ref, system.canvas, 2)
    assert strict["whole_tracks"] == 2 and bridged["whole_tracks"] == 1
    assert bridged["whole_travel_bodies"] == pytest.approx(n * step / ref.body, abs=0.02)
    assert strict["whole_travel_bodies"] < 0.6 * bridged["whole_travel_bodies"]
    assert bridged["whole_survival_10"] == 1.0  # 24 detections on a track of 25 frames


def test_runs_of_one_icon_under_two_flows_are_grouped_by_flow_and_paired_by_seed(tmp_path):
    import json

    from omegaconf import OmegaConf

    from eqflow.analysis.creatures import collect, paired_verdicts

    flows = {"ds": "eqflow.models.TrainingFreeFlow", "exact": "eqflow.models.LocalExactFlow"}
    dirs = {}
    for label, target in flows.items():
        for seed in range(4):
            run = tmp_path / label / str(seed)
            (run / ".hydra").mkdir(parents=True)
            cfg = {
                "seed": seed,
                "data": {"icon": "firefly"},
                "flow": {"model": {"_target_": target}},
                "paths": {"output_dir": str(run)},
            }
            OmegaConf.save(OmegaConf.create(cfg), run / ".hydra" / "config.yaml")
            share = 0.3 + 0.05 * seed + (0.2 if label == "exact" else 0.0)
            metrics = {
                "creatures/mean_speed": 0.4,
                "creatures/polarisation": 0.3,
                "creatures/n_tracks": 10,
                "creatures/whole_share_late": share,
            }
            (run / "metrics.json").write_text(json.dumps(metrics))
            dirs[run] = f"{label}/{seed}"
    groups, failed = collect(list(dirs), dirs)
    assert not failed
    assert sorted(groups) == ["firefly (LocalExactFlow)", "firefly (TrainingFreeFlow)"]
    (row,) = paired_verdicts(groups, key="whole_share_late", more="higher")
    assert row["n_units"] == 4 and row["mean_difference"] == pytest.approx(0.2)
    assert row["verdict"] == "firefly (LocalExactFlow) higher"
    one_flow = {d: n for d, n in dirs.items() if n.startswith("ds")}
    assert list(collect(list(one_flow), one_flow)[0]) == ["firefly"]  # one flow: by icon
