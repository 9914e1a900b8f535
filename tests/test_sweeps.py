"""Seed sweeps through Hydra's launchers, and evaluate.py on them (tiny settings)."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import TINY
from helpers import TINY_LORENZ as TINY_LORENZ_RUN
from omegaconf import OmegaConf

from eqflow.analysis import study
from eqflow.protocols.chaos import SUSTAINED_RATIO
from eqflow.runs import load_sweep

ROOT = Path(__file__).resolve().parents[1]
TINY_LORENZ = TINY_LORENZ_RUN


def _run(script, *args, cwd):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    done = subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=900,
        env=env,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return done


def _sweep(tmp_path, *extra):
    _run(
        "train.py",
        "-m",
        *TINY_LORENZ,
        *TINY,
        "seed=0,1",
        "logger=wandb",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *extra,
        cwd=tmp_path,
    )
    (sweep_dir,) = (tmp_path / "outputs" / "multirun" / "lorenz").iterdir()
    return sweep_dir


def _check_jobs(sweep_dir, n=2):
    jobs = sorted(p for p in sweep_dir.iterdir() if p.name.isdigit())
    assert [p.name for p in jobs] == [str(i) for i in range(n)]
    wandb_runs = set()
    for job in jobs:
        m = json.loads((job / "metrics.json").read_text())
        assert (job / "flow.pt").exists() and "fidelity/cos_truth" in m
        (run,) = (job / "wandb").glob("offline-run-*")
        wandb_runs.add(run.name)
    assert len(wandb_runs) == n  # one W&B run per job
    return jobs


@pytest.fixture(scope="module")
def joblib_sweep(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("joblib")
    return _sweep(tmp, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")


@pytest.mark.slow
def test_joblib_sweep_shares_one_score_model(joblib_sweep):
    jobs = _check_jobs(joblib_sweep)
    metrics = [json.loads((j / "metrics.json").read_text()) for j in jobs]
    # one cache entry, trained by exactly one of the parallel jobs
    assert len({m["score/cache_path"] for m in metrics}) == 1
    assert sorted(m["score/cache_hit"] for m in metrics) == [False, True]
    assert metrics[0]["mmd/curve"] != metrics[1]["mmd/curve"]  # the seeds differ


@pytest.mark.slow
def test_basic_launcher_sweep_hands_the_optimized_metric_to_the_sweeper(tmp_path):
    sweep_dir = _sweep(tmp_path, "optimized_metric=lyapunov/max")
    for job in _check_jobs(sweep_dir):
        m = json.loads((job / "metrics.json").read_text())
        record = json.loads((sweep_dir / "jobs" / f"{job.name}.json").read_text())
        assert record["objective"] == pytest.approx(m["lyapunov/max"], rel=1e-12)


def test_an_unmeasured_optimized_metric_returns_nothing_and_names_the_keys(caplog):
    sys.path.insert(0, str(ROOT))
    from train import optimized_value

    metrics = {"mmd/final": 0.01, "lyapunov/max": 0.3, "data/name": "lorenz"}
    assert optimized_value(metrics, "mmd/final") == 0.01
    assert optimized_value(metrics, None) is None
    with caplog.at_level("WARNING"):
        assert optimized_value(metrics, "mmd/fnial") is None
    assert "mmd/fnial" in caplog.text and "lyapunov/max, mmd/final" in caplog.text


def test_an_ensemble_run_optimizes_the_mean_of_its_members(tmp_path):
    sys.path.insert(0, str(ROOT))
    from train import optimized_value

    run = tmp_path / "run"
    for name, value in (("seed0", 0.25), ("seed1", 0.75)):
        (run / name).mkdir(parents=True)
        (run / name / "metrics.json").write_text(json.dumps({"mmd/final": value}))
    (run / "members.json").write_text(json.dumps({"members": ["seed0", "seed1"], "seeds": [0, 1]}))
    top = {"time/total_s": 3.0}
    assert optimized_value(top, "mmd/final", run) == pytest.approx(0.5)
    assert optimized_value(top, "time/total_s", run) == 3.0  # the run's own key comes first
    assert optimized_value(top, "mmd/final", tmp_path) is None  # not an ensemble: not measured


@pytest.mark.slow
def test_submitit_local_sweep(tmp_path):
    sweep_dir = _sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=15")
    _check_jobs(sweep_dir)
    assert (sweep_dir / ".submitit").is_dir()


@pytest.mark.slow
def test_evaluate_sweep_writes_table1_chaos_mmd_umap(joblib_sweep, tmp_path):
    out = tmp_path / "eval"
    done = _run(
        "evaluate.py",
        f"sweep={joblib_sweep}",
        "n_points=128",
        "n_baselines=3",
        "mmd.steps=5",
        "mmd.n_points=64",
        "chaos.settings.steps=20",
        "chaos.settings.burn_in=0",
        f"hydra.run.dir={out}",
        cwd=joblib_sweep.parents[3],
    )
    assert "| learned (n=2) |" in done.stdout or "learned (n=2)" in done.stdout
    for name in (
        "table1.md",
        "table1.csv",
        "chaos.csv",
        "lyapunov_hist.png",
        "mmd.png",
        "mmd_final.md",
        "umap.png",
        "report.md",
        "summary.json",
    ):
        assert (out / name).exists(), name
    summary = json.loads((out / "summary.json").read_text())
    assert summary["group_sizes"] == {
        "learned": 2,
        "training-free": 3,
        "random": 3,
        "ground truth": 1,
        "score": 1,
    }
    assert summary["failed"] == {}
    assert summary["table1"]["ground truth | ground truth"]["mean"] == 1.0
    assert summary["chaos"]["n"] == 2 and 0 <= summary["chaos"]["n_sustained"] <= 2
    header = (out / "chaos.csv").read_text().splitlines()[0]
    assert header.endswith("lyapunov_long_first,lyapunov_long,sustained")
    report = (out / "report.md").read_text()
    assert "sustained over 4x the horizon" in report
    assert "Table 1" in report and "commit" in report and "umap.png" in report
    (wb,) = (out / "wandb").glob("offline-run-*")
    assert b"table1" in next(wb.glob("run-*.wandb")).read_bytes()


@pytest.mark.slow
def test_evaluate_sweep_reports_a_broken_run_and_evaluates_the_rest(joblib_sweep, tmp_path):
    broken = tmp_path / "sweep"
    # evaluate.py's own output folder (from the test above, if it ran) is not a run
    shutil.copytree(joblib_sweep, broken, ignore=shutil.ignore_patterns("wandb"))
    (broken / "1" / "flow.pt").write_bytes(b"truncated")
    shutil.copytree(broken / "0", broken / "2")
    (broken / "2" / "flow.pt").unlink()  # an unfinished run
    own = broken / "evaluate" / "2026-01-01_00-00-00" / ".hydra"  # evaluate.py's output: no run
    own.mkdir(parents=True)
    (own / "config.yaml").write_text(f"sweep: {broken}\nn_points: 64\n")
    sweep = load_sweep(broken)
    assert [r.run_dir.name for r in sweep.runs] == ["0"]
    assert set(sweep.failed) == {"1", "2"}
    assert "unreadable" in sweep.failed["1"] and "no flow.pt" in sweep.failed["2"]
    cfg = OmegaConf.load(ROOT / "conf" / "evaluate.yaml")
    cfg.pop("defaults")
    cfg.pop("hydra")
    cfg.sweep, cfg.logger, cfg.n_points, cfg.n_baselines = str(broken), None, 64, 3
    cfg.mmd.steps, cfg.mmd.n_points = 3, 32
    cfg.chaos.long_horizon = 0  # not what this test is about (20 000 RK4 steps per flow)
    cfg.umap.enabled = False  # nor is the UMAP figure (numba compiles it for ~20-50 s)
    cfg.paths = {"output_dir": str(tmp_path / "out"), "cache_dir": None}
    from eqflow.evaluation import evaluate_sweep

    summary = evaluate_sweep(cfg)
    assert summary["runs"] == ["0"] and set(summary["failed"]) == {"1", "2"}
    assert "no flow.pt" in (tmp_path / "out" / "report.md").read_text()


def test_table1_on_sweep_flows(joblib_sweep):
    sweep = load_sweep(joblib_sweep)
    groups = study.build_groups(sweep, n_baselines=2, seed=0)
    reps = study.representations(groups, study.fixed_points(sweep, 64, 0))
    table = study.table1(reps)
    names = list(reps)
    for a in names:
        for b in names:
            assert table[(a, b)] == table[(b, a)]
            assert 0.0 <= table[(a, b)][0] <= 1.0
    assert table[("score", "score")] == (1.0, 0.0)
    # the training-free flows are orthogonal to the score at every point, so also overall
    assert table[("training-free", "score")][0] < 1e-5
    # baselines are reproducible from the seed
    again = study.representations(study.build_groups(sweep, 2, 0), study.fixed_points(sweep, 64, 0))
    torch.testing.assert_close(again["random"], reps["random"])


@pytest.mark.slow
def test_training_free_sweep_on_a_toy_dataset(tmp_path):
    """A sweep of training-free flows on data without a ground truth, run in-process."""
    from helpers import compose_train

    from eqflow import pipeline
    from eqflow.evaluation import evaluate_sweep

    for seed in range(2):
        cfg = compose_train(
            ["flow=training_free", "data=ring", "logger=none", f"seed={seed}"], None
        )
        cfg.paths.output_dir = str(tmp_path / "sweep" / str(seed))
        cfg.paths.cache_dir = str(tmp_path / "cache")
        pipeline.train(cfg)
        (tmp_path / "sweep" / str(seed) / ".hydra").mkdir()
        OmegaConf.save(cfg, tmp_path / "sweep" / str(seed) / ".hydra" / "config.yaml")
    cfg = OmegaConf.load(ROOT / "conf" / "evaluate.yaml")
    for key in ("defaults", "hydra"):
        cfg.pop(key)
    cfg.sweep, cfg.logger, cfg.n_points, cfg.n_baselines = str(tmp_path / "sweep"), None, 64, 2
    cfg.mmd.steps, cfg.mmd.n_points = 3, 32
    cfg.chaos.long_horizon = 0  # not what this test is about (20 000 RK4 steps per flow)
    cfg.umap.enabled = False  # nor is the UMAP figure (numba compiles it for ~20-50 s)
    cfg.paths = {"output_dir": str(tmp_path / "out"), "cache_dir": None}
    summary = evaluate_sweep(cfg)
    assert not (tmp_path / "out" / "umap.png").exists()  # umap.enabled=false
    assert summary["group_sizes"] == {"training-free": 2, "random": 2, "score": 1}
    assert summary["table1"]["training-free | score"]["mean"] < 1e-5  # v = D s is orthogonal to s
    # in 2-D every skew matrix is +-(rotation by 90 deg): the flows agree up to sign, |cos| = 1
    assert summary["table1"]["training-free | training-free"]["mean"] == pytest.approx(1.0)


def test_run_dirs_follows_links_and_skips_evaluate_outputs(tmp_path):
    from eqflow.runs import run_dirs

    for name in ("a", "b"):
        (tmp_path / "runs" / name / ".hydra").mkdir(parents=True)
        (tmp_path / "runs" / name / ".hydra" / "config.yaml").write_text("seed: 0\n")
    table = tmp_path / "table"
    table.mkdir()
    (table / "first").symlink_to(tmp_path / "runs" / "a")
    (table / "second").symlink_to(tmp_path / "runs" / "b")
    (table / "evaluate" / "x" / ".hydra").mkdir(parents=True)
    (table / "evaluate" / "x" / ".hydra" / "config.yaml").write_text("sweep: here\n")
    assert sorted(p.name for p in run_dirs(table)) == ["first", "second"]


def test_chaos_rows_drop_the_speed_normalised_exponent_of_flows_at_rest():
    def run(lam, normalised, speed):
        return SimpleNamespace(
            metrics={
                "lyapunov/max": lam,
                "lyapunov/speed_normalised": normalised,
                "lyapunov/mean_speed": speed,
            }
        )

    # a flow recorded before the floor: its trajectories stopped, lam / speed blew up
    sweep = SimpleNamespace(
        runs=[run(0.003, 0.01, 0.26), run(-0.25, -1.4e8, 1.8e-9)], names=["moving", "stopped"]
    )
    rows = study.chaos(sweep)
    assert rows[0]["speed_normalised"] == 0.01 and math.isnan(rows[1]["speed_normalised"])
    summary = study.chaos_summary(rows)
    assert summary["n_at_rest"] == 1 and summary["n_positive"] == 1
    assert summary["share_positive"] == 0.5
    assert summary["speed_normalised_min"] == summary["speed_normalised_max"] == 0.01


def test_chaos_keeps_a_recorded_nan_and_measures_only_runs_that_recorded_nothing(monkeypatch):
    measured = []

    def fake_lyapunov_many(flows, x, generators, **settings):
        measured.extend(flows)
        return [
            {"lyapunov": 0.02, "lyapunov_speed_normalised": 0.04, "mean_speed": 0.5} for _ in flows
        ]

    monkeypatch.setattr(study, "flow_lyapunov_many", fake_lyapunov_many)
    escaped = {
        "lyapunov/max": "nan",
        "lyapunov/speed_normalised": "nan",
        "lyapunov/mean_speed": "nan",
    }  # as metrics.json stores it: every trajectory left
    runs = [
        SimpleNamespace(metrics=escaped, flow="escaped", data=SimpleNamespace(x=None)),
        SimpleNamespace(metrics={}, flow="unmeasured", data=SimpleNamespace(x=None)),
    ]
    rows = study.chaos(SimpleNamespace(runs=runs, names=["escaped", "unmeasured"]))
    assert measured == ["unmeasured"]
    assert math.isnan(rows[0]["lyapunov"]) and rows[0]["source"] == "run"
    assert rows[1]["lyapunov"] == 0.02 and rows[1]["source"] == "evaluate"


class _FieldFlow(torch.nn.Module):
    """dx/dt = f(x), standing in for a trained flow (alpha 1: the data are used as they are)."""

    def __init__(self, f):
        super().__init__()
        self.f = f
        self.register_buffer("alpha", torch.tensor(1.0, dtype=torch.float64))

    @property
    def device(self):
        return self.alpha.device

    def velocity(self, x):
        return self.f(x)


def test_long_horizon_tells_exponential_from_linear_separation():
    from eqflow.data import Lorenz

    # Lorenz separates twins exponentially (0.906 at every horizon); a shear linearly, which
    # also gives a positive exponent over a finite horizon, log(c T) / T, but one that fades
    shear = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    rotation = torch.tensor(
        [[0.0, 1.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 0.0, 0.0]], dtype=torch.float64
    )
    flows = {
        "lorenz": Lorenz(),
        "shear": lambda x: x @ shear.T,
        "rotation": lambda x: x @ rotation.T,
    }
    data = SimpleNamespace(x=torch.randn(16, 3, generator=torch.Generator().manual_seed(0)))
    runs = [SimpleNamespace(metrics={}, flow=_FieldFlow(f), data=data) for f in flows.values()]
    settings = {"n_trajectories": 4, "dt": 0.01, "steps": 2000, "burn_in": 1000, "bound": None}
    rows = study.chaos(
        SimpleNamespace(runs=runs, names=list(flows)), settings=settings, long_horizon=4
    )
    by_name = {r["run"]: r for r in rows}
    assert by_name["lorenz"]["lyapunov_long"] == pytest.approx(0.906, rel=0.1)
    assert by_name["shear"]["lyapunov"] > 0.05  # positive over the first horizon ...
    assert by_name["shear"]["lyapunov_long"] < 0.4 * by_name["shear"]["lyapunov"]  # ... fading
    assert [r["sustained"] for r in rows] == [True, False, False]
    for r in rows:  # the verdict can be read off the table: long against the same starts' first
        long, first = r["lyapunov_long"], r["lyapunov_long_first"]
        assert r["sustained"] == (long > 0 and long >= SUSTAINED_RATIO * first)
    assert by_name["shear"]["lyapunov_long_first"] > 2 * by_name["shear"]["lyapunov_long"]
    assert study.chaos_summary(rows)["n_sustained"] == 1


def test_evaluate_settings_are_checked():
    from hydra import compose, initialize_config_dir

    from eqflow.config import EVALUATE_RULES, validate
    from eqflow.errors import ConfigError

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("evaluate", overrides=["sweep=x", "chaos.long_horizon=-1", "n_points=abc"])
    with pytest.raises(ConfigError, match="(?s)n_points=.abc.*chaos.long_horizon=-1"):
        validate(cfg, EVALUATE_RULES)


@pytest.mark.slow
def test_a_sweep_of_ensembles_on_submitit_is_evaluated_as_one_study(tmp_path):
    """Two jobs of two members each (seeds 0-1 and 2-3): four learned flows in one Table 1."""
    _run(
        "train.py",
        "-m",
        *TINY_LORENZ,
        *TINY,
        "seed=0,2",
        "flow.ensemble=2",
        "logger=csv",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=15",
        cwd=tmp_path,
    )
    (sweep_dir,) = (tmp_path / "outputs" / "multirun" / "lorenz").iterdir()
    from eqflow.runs import run_dirs

    names = [str(d.relative_to(sweep_dir)) for d in run_dirs(sweep_dir)]
    assert names == ["0/seed0", "0/seed1", "1/seed2", "1/seed3"]
    out = tmp_path / "eval"
    _run(
        "evaluate.py",
        f"sweep={sweep_dir}",
        "n_points=64",
        "n_baselines=2",
        "mmd.steps=5",
        "mmd.n_points=32",
        "chaos.settings.steps=20",
        "chaos.settings.burn_in=0",
        "chaos.long_horizon=2",
        "umap.enabled=false",
        "logger=none",
        f"hydra.run.dir={out}",
        cwd=tmp_path,
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["group_sizes"]["learned"] == 4 and summary["failed"] == {}
    assert summary["chaos"]["n"] == 4
