"""Follow the whole creatures of finished alife runs again with other linking settings, without
a new run: ``python scripts/relink_creatures.py RUN_DIR... [--memory 0 2] [--min-track-frames 5]``.

Reads each run's ``figures/creatures_whole_centres.npz`` (every frame's whole creatures) and
``metrics.json`` (the whole share of the last quarter), links the centres with each ``memory``
(frames a track may miss, :func:`eqflow.metrics.tracking.link`) and prints one row per run and
memory: whole tracks, survival, mean and median net travel and relative travel in body lengths,
the whole creatures' drift speed, and the sweep target (whole share late x mean travel)."""

import argparse
import json
from pathlib import Path

import numpy as np

from eqflow.metrics.census import survival, travel_statistics
from eqflow.metrics.tracking import link, motion_statistics

COLUMNS = ("run", "memory", "tracks", "survival_10", "travel", "median", "relative", "speed")


def relink(run: Path, memory: int, min_track_frames: int) -> dict:
    with np.load(run / "figures" / "creatures_whole_centres.npz") as saved:
        centres = [saved[f"frame_{k}"] for k in range(int(saved["frames"]))]
        size, body, frame_dt = int(saved["canvas"]), float(saved["body"]), float(saved["frame_dt"])
        # the run's own linking distance (files from before it was kept: half a body, the default)
        max_step = float(saved["max_step"]) if "max_step" in saved.files else body / 2
    tracks = link(centres, (size, size), max_step, memory)
    late = json.loads((run / "metrics.json").read_text()).get("creatures/whole_share_late")
    moved = travel_statistics(
        tracks, body, size, min_track_frames, np.asarray([] if late is None else [late])
    )
    motion = motion_statistics(tracks, (size, size), frame_dt, min_track_frames)
    return {
        "run": str(run),
        "memory": memory,
        "tracks": len(moved["whole_travel_per_track"]),
        "survival_10": survival(tracks, 10),
        "travel": moved["whole_travel_bodies"],
        "median": moved["whole_travel_bodies_median"],
        "relative": moved["whole_travel_bodies_relative"],
        "speed": motion["mean_speed"],
        "whole_share_late": late,
        "bodies_travelled": moved["whole_bodies_travelled"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--memory", nargs="+", type=int, default=[0, 2])
    parser.add_argument("--min-track-frames", type=int, default=5)
    args = parser.parse_args()
    print("\t".join((*COLUMNS, "whole_share_late", "bodies_travelled")))
    for run in args.runs:
        if not (run / "figures" / "creatures_whole_centres.npz").exists():
            raise SystemExit(
                f"{run}: no figures/creatures_whole_centres.npz; runs keep it from this "
                f"version on (experiment=alife with figures), rerun it to relink"
            )
        for memory in args.memory:
            row = relink(run, memory, args.min_track_frames)
            print(
                "\t".join(
                    v if isinstance(v, str) else f"{v:.4g}"
                    for v in (
                        *(row[c] for c in COLUMNS),
                        row["whole_share_late"] or np.nan,
                        row["bodies_travelled"],
                    )
                )
            )


if __name__ == "__main__":
    main()
