"""A user's own snapshots from files: every format read to the same array, every bad input
refused with the file, the problem and the fix, and experiment=points end to end."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import compose_train
from PIL import Image

from eqflow import pipeline
from eqflow.data import DataFileError, ImagesFromFiles, PointsFromFile

ROOT = Path(__file__).resolve().parents[1]
POINTS = np.random.default_rng(0).normal(size=(150, 3)) * [1.0, 2.0, 0.5] + [0.0, 1.0, -3.0]


def write_csv(path: Path, arr: np.ndarray, header: list[str] | None = None, sep: str = ",") -> Path:
    lines = ([sep.join(header)] if header else []) + [
        sep.join(repr(float(v)) for v in row) for row in arr
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_every_format_reads_to_the_same_points(tmp_path):
    np.save(tmp_path / "p.npy", POINTS)
    np.savez(tmp_path / "p.npz", cells=POINTS, other=POINTS[:3])
    torch.save(torch.from_numpy(POINTS), tmp_path / "p.pt")
    torch.save({"cells": torch.from_numpy(POINTS)}, tmp_path / "d.pt")
    write_csv(tmp_path / "h.csv", POINTS, ["a", "b", "c"])
    write_csv(tmp_path / "n.csv", POINTS)
    write_csv(tmp_path / "p.tsv", POINTS, ["a", "b", "c"], sep="\t")
    sources = [
        ("p.npy", {}),
        ("p.npz", {"key": "cells"}),
        ("p.pt", {}),
        ("d.pt", {"key": "cells"}),
        ("h.csv", {}),
        ("n.csv", {}),
        ("p.tsv", {}),
    ]
    try:
        import pandas as pd

        pd.DataFrame(POINTS, columns=["a", "b", "c"]).to_parquet(tmp_path / "p.parquet")
        sources.append(("p.parquet", {}))
    except ImportError:
        pass
    for name, kw in sources:
        got = PointsFromFile(str(tmp_path / name), **kw).points
        assert torch.allclose(got, torch.from_numpy(POINTS), atol=1e-12), name
    # columns by name and by index pick the same coordinates
    by_name = PointsFromFile(str(tmp_path / "h.csv"), columns=["c", "a"]).points
    by_index = PointsFromFile(str(tmp_path / "n.csv"), columns=[2, 0]).points
    assert torch.allclose(by_name, torch.from_numpy(POINTS[:, [2, 0]]))
    assert torch.equal(by_name, by_index)
    assert PointsFromFile(str(tmp_path / "h.csv"), columns=["c", "a"]).names == ["c", "a"]
    assert PointsFromFile(str(tmp_path / "p.tsv")).names == ["a", "b", "c"]
    assert PointsFromFile(str(tmp_path / "n.csv")).names == ["x0", "x1", "x2"]
    assert PointsFromFile(str(tmp_path / "h.csv"), columns=[2, 0]).names == ["c", "a"]


def test_points_are_standardised_and_subsampled_from_the_data_seed(tmp_path):
    np.save(tmp_path / "p.npy", POINTS)
    system = PointsFromFile(str(tmp_path / "p.npy"), max_points=120)
    a = system.generate(torch.Generator().manual_seed(0))
    b = system.generate(torch.Generator().manual_seed(0))
    assert a.x.shape == (120, 3) and torch.equal(a.x, b.x)
    assert torch.allclose(a.x.mean(0), torch.zeros(3), atol=1e-5)
    raw = a.x.double() * a.scale.double() + a.shift.double()  # maps back to the file's units
    nearest = torch.cdist(raw, torch.from_numpy(POINTS)).min(dim=1).values
    assert float(nearest.max()) < 1e-5  # every kept point is one of the file's


@pytest.mark.parametrize(
    "case,match",
    [
        ("missing", r"missing\.csv: no such file"),
        ("extension", r"unknown extension '\.xlsx'.*\.npy"),
        ("empty", r"empty"),
        ("garbage", r"cannot be read as \.npy"),
        ("ragged", r"line 4: 2 values where the header has 3"),
        ("text", r"line 3, column b: 'abc' is not a number"),
        ("nan", r"2 of 150 rows hold NaN or infinite values.*data.drop_nonfinite=true"),
        ("few", r"50 points; eqflow needs at least 100"),
        ("one_column", r"one column"),
        ("constant", r"column\(s\) \[1\] are constant.*data.columns"),
        ("npz_key", r"holds 2 arrays \(a, b\); pick one with data.key"),
        ("name_without_header", r"'x' is a name, but .* has no header"),
    ],
)
def test_bad_point_files_are_refused_with_the_problem_and_the_fix(tmp_path, case, match):
    p = tmp_path / "f.csv"
    kw = {}
    if case == "missing":
        p = tmp_path / "missing.csv"
    elif case == "extension":
        p = tmp_path / "f.xlsx"
        p.write_text("1,2\n")
    elif case == "empty":
        p.write_text("")
    elif case == "garbage":
        p = tmp_path / "f.npy"
        p.write_bytes(b"not an array at all")
    elif case == "ragged":
        p.write_text("a,b,c\n1,2,3\n4,5,6\n7,8\n")
    elif case == "text":
        p.write_text("a,b,c\n1,2,3\n4,abc,6\n")
    elif case == "nan":
        arr = POINTS.copy()
        arr[3, 1], arr[7, 0] = np.nan, np.inf
        write_csv(p, arr)
    elif case == "few":
        write_csv(p, POINTS[:50])
    elif case == "one_column":
        write_csv(p, POINTS[:, :1])
    elif case == "constant":
        arr = POINTS.copy()
        arr[:, 1] = 4.0
        write_csv(p, arr)
    elif case == "npz_key":
        p = tmp_path / "f.npz"
        np.savez(p, a=POINTS, b=POINTS)
    elif case == "name_without_header":
        write_csv(p, POINTS)
        kw = {"columns": ["x", "y"]}
    with pytest.raises(DataFileError, match=match):
        PointsFromFile(str(p), **kw)


def test_nonfinite_rows_are_dropped_with_a_warning_when_asked(tmp_path, caplog):
    arr = POINTS.copy()
    arr[3, 1] = np.nan
    np.save(tmp_path / "p.npy", arr)
    with caplog.at_level("WARNING"):
        system = PointsFromFile(str(tmp_path / "p.npy"), drop_nonfinite=True)
    assert system.points.shape == (149, 3) and "dropped 1 of 150 rows" in caplog.text


def test_images_from_a_folder_and_from_arrays(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(8, 16, 16, 3), dtype=np.uint8)
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(folder / f"{i:02d}.png")
    np.save(tmp_path / "last.npy", imgs)  # (N, H, W, C)
    np.savez(tmp_path / "first.npz", x=imgs.transpose(0, 3, 1, 2) / 255.0)  # floats in [0, 1]
    expected = torch.from_numpy(imgs.transpose(0, 3, 1, 2).astype(np.float32) / 127.5 - 1)
    a = ImagesFromFiles(str(folder)).images
    b = ImagesFromFiles(str(tmp_path / "last.npy"), channels=3, size=16).images
    c = ImagesFromFiles(str(tmp_path / "first.npz")).images
    assert a.shape == (8, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.allclose(a, expected) and torch.allclose(b, expected)
    assert torch.allclose(c, expected, atol=1e-6)
    with pytest.raises(DataFileError, match="3-channel images; data.channels=1"):
        ImagesFromFiles(str(folder), channels=1)


def test_images_of_mixed_sizes_or_modes_are_refused(tmp_path):
    for case in ("size", "mode"):
        folder = tmp_path / case
        folder.mkdir()
        for i in range(8):
            Image.new("RGB", (16, 16)).save(folder / f"{i}.png")
        odd = Image.new("RGB", (20, 20)) if case == "size" else Image.new("RGBA", (16, 16))
        odd.save(folder / "9.png")
        with pytest.raises(
            DataFileError, match=r"9\.png: .*every image needs the same size and mode"
        ):
            ImagesFromFiles(str(folder))
    np.save(tmp_path / "wide.npy", np.full((8, 1, 16, 16), 3.0))
    with pytest.raises(DataFileError, match=r"values from 3 to 3; images must lie in \[0, 1\]"):
        ImagesFromFiles(str(tmp_path / "wide.npy"))


@pytest.mark.slow
def test_a_bad_data_file_stops_train_py_before_it_writes_anything(tmp_path):
    runs = tmp_path / "runs"
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "experiment=points",
            f"data.path={tmp_path / 'nope.csv'}",
            f"hydra.run.dir={runs / 'r'}",
            "logger=none",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "nope.csv: no such file" in proc.stdout + proc.stderr
    assert not (runs / "r").exists() and not (tmp_path / "cache").exists()


def tiny_points_run(tmp_path, points: np.ndarray, *overrides):
    path = write_csv(tmp_path / "cells.csv", points, [f"g{i}" for i in range(points.shape[1])])
    cfg = compose_train(
        [
            "experiment=points",
            f"data.path={path}",
            "score.epochs=30",
            "trainer.max_epochs=2",
            "flow.ensemble=1",
            "evaluate=false",
            "measure.lyapunov.steps=100",
            "measure.lyapunov.burn_in=10",
            "measure.mmd.n_points=128",
            "measure.mmd.steps=50",
            "trainer.enable_progress_bar=false",
            "logger=none",
            *overrides,
        ],
        tmp_path,
        tiny=False,
    )
    return pipeline.train(cfg)


@pytest.mark.slow
def test_experiment_points_on_a_csv_writes_metrics_and_a_pair_plot(tmp_path):
    rng = np.random.default_rng(1)
    points = rng.normal(size=(2000, 4)) @ np.array(
        [[1, 0.5, 0, 0], [0, 1, 0.3, 0], [0, 0, 1, 0.2], [0, 0, 0, 1.0]]
    )
    result = tiny_points_run(tmp_path, points)
    metrics = json.loads((result.output_dir / "metrics.json").read_text())
    assert metrics["status"] == "finished" and np.isfinite(metrics["mmd/final"])
    assert "lyapunov/max" in metrics and "fidelity/cosine" not in metrics  # no ground truth
    assert (result.output_dir / "figures" / "pairs.png").exists()


@pytest.mark.slow
def test_training_free_flow_on_a_gaussian_file_keeps_its_distribution(tmp_path):
    """A 2-D Gaussian: its score is linear (closed form), which the score MLP learns; the
    training-free flow v = D s then keeps the noised data's distribution to within the score
    model's own error, while the score flow dx/dt = s drifts far from it.

    Measured at 1 024 points (the estimate's spread ~0.0006; at 128 points it was ~0.005, as
    large as the tolerance this test once had, and it failed on another CPU): MMD^2 stays below
    0.0062 over the run with this score (0.0079 after 400 score epochs: the MLP score's own
    error, not its training time), against 0.58 for the score flow and 0.08 with an
    under-trained score (20 epochs), which both rules below reject."""
    rng = np.random.default_rng(2)
    points = rng.normal(size=(4000, 2)) * [2.0, 0.5]
    result = tiny_points_run(
        tmp_path,
        points,
        "flow=training_free",
        "score=mlp",
        "score.epochs=150",
        "score.batch_size=128",
        "measure.mmd.n_points=1024",
    )
    m = result.metrics
    worst = max(abs(float(v)) for v in m["mmd/curve"])
    assert abs(m["mmd/noise_floor"]) < 0.003, m["mmd/noise_floor"]  # two draws of one density
    assert worst < 0.02, worst
    assert worst < 0.05 * m["mmd/score_flow_final"], (worst, m["mmd/score_flow_final"])


def test_experiment_images_trains_the_image_score_and_builds_the_training_free_flow(tmp_path):
    rng = np.random.default_rng(3)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, size=(32, 32, 2), dtype=np.uint8)[..., 0]).save(
            folder / f"{i:03d}.png"
        )  # grayscale PNGs: one channel
    cfg = compose_train(
        [
            "experiment=images",
            f"data.path={folder}",
            "score.epochs=1",
            "score.batch_size=4",
            "score.samples=null",
            "logger=none",
            "trainer.enable_progress_bar=false",
        ],
        tmp_path,
        tiny=False,
    )
    result = pipeline.train(cfg)
    assert result.metrics["status"] == "finished"
    assert result.flow.hparams.spatial and result.flow.D.shape == (1, 1, 3, 3)
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    v, s = result.flow.velocity(x), result.flow.score(x)
    assert v.shape == x.shape and abs(float((v * s).sum())) < 1e-3 * float((s * s).sum())


@pytest.mark.slow
def test_scatters_from_a_file_are_tracked_as_creatures(tmp_path):
    from eqflow.data import AlifeSystem

    scatters = (
        AlifeSystem("dot", canvas=32, icon_size=12, n_samples=16, progress=False)
        .generate(torch.Generator().manual_seed(0))
        .x
    )
    np.save(tmp_path / "scatters.npy", scatters.numpy())  # floats in [-1, 1], (N, 3, H, W)
    system = ImagesFromFiles(str(tmp_path / "scatters.npy"))
    assert system.background == pytest.approx((1.0, 1.0, 1.0), abs=0.02)  # AlifeSystem's white
    cfg = compose_train(
        [
            "experiment=images",
            f"data.path={tmp_path / 'scatters.npy'}",
            "measure=creatures",
            "score.epochs=1",
            "score.batch_size=8",
            "score.samples=null",
            "logger=none",
            "trainer.enable_progress_bar=false",
            "measure.creatures.steps=40",
            "measure.creatures.frame_every=5",
        ],
        tmp_path,
        tiny=False,
    )
    m = pipeline.train(cfg).metrics
    assert m["creatures/reference_area"] > 0 and m["creatures/expected_count"] > 0
    assert m["creatures/n_tracks"] == len(m["creatures/track_speeds"])
