"""The second reliability audit: nothing overwritten, no job of a sweep lost, every failure named
with its fix. One test (or a few) per point of the audit."""

import errno
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import CHEAP_EVAL, run_script, signal_train_when
from omegaconf import OmegaConf

from eqflow.data.files import PointsFromFile, read_points
from eqflow.data.ode import Lorenz, ODESystem
from eqflow.errors import RunInterrupted, StorageError
from eqflow.hydra_callbacks import RunFolderGuard
from eqflow.io.interrupts import stage, stop_on_signals
from eqflow.io.run_folders import claim_run_dir
from eqflow.io.storage import atomic_write
from eqflow.runs import RunLoadError, load_run, load_sweep
from eqflow.sweep_jobs import unfinished_jobs

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "experiment=lorenz",
    "flow=mlp",
    "evaluate=false",
    "data.n_trajectories=2",
    "data.n_steps=400",
    "data.burn_in_steps=100",
    "score.epochs=2",
    "trainer.max_epochs=1",
    "logger=none",
    "trainer.enable_progress_bar=false",
    "measure.lyapunov.steps=20",
    "measure.lyapunov.burn_in=0",
    "measure.mmd.steps=5",
    "measure.figures.steps=10",
    "measure.fidelity.n_points=64",
]


def _cli(script, *args, cwd):
    return run_script(script, *args, cwd=cwd)


# ---- 1. a folder that holds a run is never overwritten -----------------------------------------


def _fake_run(folder: Path) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / "metrics.json").write_text('{"mmd/final": 0.5}')
    return folder


@pytest.mark.slow
def test_a_named_run_folder_holding_a_run_is_refused_and_left_untouched(tmp_path):
    run = _fake_run(tmp_path / "R")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    done = _cli(
        "train.py",
        *TINY,
        "seed=7",
        f"hydra.run.dir={run}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr[-2000:]
    assert "already holds a run" in done.stderr and "ckpt_path=" in done.stderr
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # not even .hydra/ was rewritten
    assert not (tmp_path / "cache").exists()  # refused before any work


@pytest.mark.slow
def test_a_multirun_into_a_folder_with_runs_is_refused(tmp_path):
    sweep = tmp_path / "S"
    _fake_run(sweep / "0")
    done = _cli(
        "train.py",
        "-m",
        *TINY,
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
    )
    assert done.returncode == 2 and "already holds the runs of a multirun" in done.stderr
    assert sorted(p.name for p in sweep.iterdir()) == ["0"]


def test_resuming_into_the_same_folder_is_allowed(tmp_path):
    run = _fake_run(tmp_path / "R")
    cfg = OmegaConf.create({"hydra": {"run": {"dir": str(run)}}, "ckpt_path": "x"})
    RunFolderGuard().on_run_start(cfg)  # no SystemExit: ckpt_path resumes it
    cfg.ckpt_path = None
    with pytest.raises(SystemExit):
        RunFolderGuard().on_run_start(cfg)


def test_a_folder_that_cannot_be_written_is_refused_with_the_setting(tmp_path, monkeypatch, capsys):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(Path, "mkdir", read_only)
    cfg = OmegaConf.create({"hydra": {"run": {"dir": str(tmp_path / "new")}}})
    with pytest.raises(SystemExit) as info:
        RunFolderGuard().on_run_start(cfg)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "read-only" in err and str(tmp_path / "new") in err and "hydra.run.dir=" in err


# ---- 2. every stage ends with 143 (SIGTERM) or 130 (SIGINT) and says how to go on ---------------


@pytest.mark.parametrize("sig,code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_in_any_stage_names_the_stage_and_its_exit_code(sig, code):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN where the shell started us in background
    with pytest.raises(RunInterrupted) as info:
        with stop_on_signals(), stage("making the data", "run the same command again"):
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises before this ends
    assert info.value.exit_code == code
    assert "while making the data: run the same command again" in str(info.value)
    assert signal.getsignal(signal.SIGINT) is before  # restored


def test_a_signal_inside_a_librarys_except_exception_still_stops_the_run():
    """CI once saw SIGTERM land inside inspect.getfullargspec (called by Lightning's self.log),
    whose ``except Exception`` turned the interruption into 'TypeError: unsupported callable'."""
    swallowed = False
    with pytest.raises(RunInterrupted) as info:
        with stop_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except Exception:  # noqa: BLE001 - what a library's broad handler does
                swallowed = True
    assert not swallowed and info.value.exit_code == 143


@pytest.mark.slow
def test_sigint_during_the_flow_fit_exits_130_with_the_resume_command(tmp_path):
    out = tmp_path / "run"
    code, output = signal_train_when(
        [
            *TINY,
            "trainer.max_epochs=100000",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={out}",
        ],
        (out / "checkpoints" / "last.ckpt").exists,
        signal.SIGINT,
        tmp_path,
    )
    assert code == 130, output[-2000:]
    assert "SIGINT" in output and "resume it with ckpt_path=" in output
    assert (out / "checkpoints" / "last.ckpt").exists() and not (out / "flow.pt").exists()


# ---- 3 and 4. a multirun goes on past a failing job; evaluate names what it lacks ---------------


@pytest.fixture(scope="module")
def sweep_with_a_failed_job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    sweep = tmp / "S"
    done = _cli(
        "train.py",
        "-m",
        *TINY,
        "seed=0,-1,1",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp / 'cache'}",
        cwd=tmp,
    )
    return sweep, tmp / "cache", done


@pytest.mark.slow
def test_a_multirun_runs_every_job_and_names_the_failed_one(sweep_with_a_failed_job):
    sweep, _, done = sweep_with_a_failed_job
    assert done.returncode == 1, done.stderr[-3000:]
    assert "1 of 3 jobs failed" in done.stderr and "job 1 (seed=-1)" in done.stderr
    assert (sweep / "0" / "flow.pt").exists() and (sweep / "2" / "flow.pt").exists()
    assert list(unfinished_jobs(sweep)) == ["job 1 (seed=-1)"]


@pytest.mark.slow
def test_evaluate_lists_failed_jobs_and_exits_non_zero_when_strict(sweep_with_a_failed_job):
    sweep, cache, _ = sweep_with_a_failed_job
    out = sweep.parent / "eval"
    done = _cli(
        "evaluate.py",
        f"sweep={sweep}",
        f"paths.cache_dir={cache}",
        *CHEAP_EVAL,
        f"hydra.run.dir={out}",
        "strict=true",
        cwd=sweep.parent,
    )
    assert done.returncode == 1, done.output[-3000:]
    assert "job 1 (seed=-1)" in done.output
    report = (out / "report.md").read_text()
    assert "left out: 1" in report and "job 1 (seed=-1)" in report


def test_a_corrupt_metrics_json_is_a_named_run_left_out_not_a_nan(
    sweep_with_a_failed_job, tmp_path
):
    sweep, cache, _ = sweep_with_a_failed_job
    copy = tmp_path / "S"
    shutil.copytree(sweep / "0", copy / "0")
    shutil.copytree(sweep / "2", copy / "2")
    (copy / "2" / "metrics.json").write_text('{"mmd/final": 0.1, "lyap')
    with pytest.raises(RunLoadError, match=r"metrics\.json is not valid JSON.*Fix: move it aside"):
        load_run(copy / "2", str(cache))
    loaded = load_sweep(copy, str(cache))
    assert [r.run_dir.name for r in loaded.runs] == ["0"] and list(loaded.failed) == ["2"]


# ---- 5. a full disk or a read-only folder: the path and the setting that moves it --------------


def test_a_full_disk_names_the_file_and_leaves_no_partial_file(tmp_path):
    def full(f):
        f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    target = tmp_path / "cache" / "score" / "entry.pt"
    with pytest.raises(StorageError) as info:
        atomic_write(target, full, setting="paths.cache_dir=<another folder>")
    message = str(info.value)
    assert str(target) in message and "no space left" in message and "paths.cache_dir" in message
    assert list(target.parent.iterdir()) == []


def test_torch_save_failing_on_a_full_disk_is_named(tmp_path, monkeypatch):
    def enforce_fail(obj, f):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64")

    monkeypatch.setattr(torch, "save", enforce_fail)
    from eqflow.io.cache import atomic_torch_save

    with pytest.raises(StorageError, match=r"cannot write .*flow\.pt.*a full disk"):
        atomic_torch_save({}, tmp_path / "flow.pt", "hydra.run.dir=<another folder>")
    assert list(tmp_path.iterdir()) == []


def test_a_read_only_outputs_folder_is_named_with_the_setting(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(os, "makedirs", read_only)
    with pytest.raises(StorageError, match=r"read-only.*hydra\.run\.dir"):
        claim_run_dir(str(tmp_path / "outputs" / "runs" / "x"))


# ---- 6. data sanity -----------------------------------------------------------------------------


def _csv(path: Path, rows: np.ndarray) -> Path:
    np.savetxt(path, rows, delimiter=",", header="a,b", comments="")
    return path


@pytest.mark.parametrize("value,match", [(1e308, "beyond the 1e\\+15"), (1e9, "robust scales")])
def test_an_absurd_value_in_a_csv_is_refused_with_its_row(tmp_path, value, match):
    rows = np.random.default_rng(0).normal(size=(200, 2))
    rows[17, 1] = value
    path = _csv(tmp_path / "points.csv", rows)
    with pytest.raises(ValueError, match=f"row 18, column 1 .*{match}.*Fix: remove"):
        PointsFromFile(str(path))


def test_ordinary_heavy_tails_are_accepted(tmp_path):
    rows = np.random.default_rng(0).standard_cauchy(size=(500, 2))
    assert PointsFromFile(str(_csv(tmp_path / "points.csv", rows))).points.shape == (500, 2)


def test_ode_data_below_the_minimum_size_is_refused():
    with pytest.raises(ValueError, match=r"1 x 5 = 5 snapshots.*Fix: raise data\.n_steps"):
        ODESystem(Lorenz(), 3, n_trajectories=1, n_steps=5)


@pytest.mark.slow
def test_evaluate_checks_its_keys_in_run_mode_too(tmp_path):
    done = _cli("evaluate.py", f"run={tmp_path}", "n_points=-3", "logger=none", cwd=tmp_path)
    assert done.returncode == 2 and "n_points=-3" in done.output


# ---- 7. errors that name the fix ----------------------------------------------------------------


def test_an_empty_or_header_only_csv_names_the_fix(tmp_path):
    (tmp_path / "empty.csv").write_text("\n\n")
    (tmp_path / "header.csv").write_text("a,b\n")
    for name in ("empty.csv", "header.csv"):
        with pytest.raises(ValueError, match="Fix: give a text file with one point per row"):
            read_points(tmp_path / name)


def test_a_file_that_is_not_csv_names_the_fix(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("x" * 300_000)  # one field beyond the csv module's limit
    with pytest.raises(ValueError, match="not a .csv file or it is damaged. Fix: give a text"):
        read_points(path)


def test_a_png_that_is_not_an_image_names_the_fix(tmp_path):
    from eqflow.data.files import _image_array

    (tmp_path / "frame.png").write_text("not an image")
    with pytest.raises(ValueError, match="not a PNG image or it is damaged. Fix: export it"):
        _image_array(tmp_path, None)
