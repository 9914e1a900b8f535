"""A user's daily loop: seed sweeps that run every job whatever fails, searches that end with
their best value, with any launcher."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers import CHEAP_EVAL, TINY, compose_train, run_script

SWEEP_EXPERIMENT = """\
# @package _global_
defaults:
  - toy2d
hydra:
  sweeper:
    params:
      seed: -1,0,1
"""


@pytest.mark.slow
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]])
def test_a_sweep_from_sweeper_params_runs_every_job_past_a_failed_first_one(tmp_path, launcher):
    """Seeds given in ``hydra.sweeper.params`` of a config of one's own (not on the command
    line), the first one invalid: all three jobs run, and the multirun ends with exit 1 and
    the failed job named."""
    conf = tmp_path / "conf" / "experiment"
    conf.mkdir(parents=True)
    (conf / "seed_sweep.yaml").write_text(SWEEP_EXPERIMENT)
    sweep = tmp_path / "S"
    done = run_script(
        "train.py",
        "-m",
        f"--config-dir={tmp_path / 'conf'}",
        "experiment=seed_sweep",
        *TINY,
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *launcher,
        cwd=tmp_path,
    )
    assert done.returncode == 1, done.output[-3000:]
    last = done.stderr.strip().splitlines()
    assert "1 of 3 jobs failed" in done.stderr and "job 0 (seed=-1)" in done.stderr, last[-5:]
    assert (sweep / "1" / "flow.pt").exists() and (sweep / "2" / "flow.pt").exists()
    records = {p.stem: json.loads(p.read_text()) for p in (sweep / "jobs").glob("*.json")}
    assert {k: r["status"] for k, r in records.items()} == {
        "0": "failed",
        "1": "finished",
        "2": "finished",
    }
    assert "seed=-1" in records["0"]["overrides"] and "seed" in records["0"]["error"]
    assert all(isinstance(records[k]["objective"], float) for k in ("1", "2"))


@pytest.mark.slow
def test_a_three_trial_search_ends_with_its_best_value(tmp_path):
    sweep = tmp_path / "S"
    done = run_script(
        "train.py",
        "hparams_search=toy2d_optuna",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.sampler.n_startup_trials=2",
        *TINY,
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.output[-3000:]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    objectives = [
        json.loads((sweep / "jobs" / f"{n}.json").read_text())["objective"] for n in range(3)
    ]
    # the best value is the lowest MMD^2 of the three trials, each the run's own measurement
    assert result["best_value"] == pytest.approx(min(objectives))
    metrics = [json.loads((sweep / str(n) / "metrics.json").read_text()) for n in range(3)]
    assert sorted(objectives) == pytest.approx(sorted(m["mmd/final"] for m in metrics))
    assert set(result["best_params"]) == {
        "flow.model.lr",
        "flow.model.hidden",
        "flow.model.n_freqs",
    }


# ---- the score cache: a debug flag never poisons it --------------------------------------------


def _score_key(*overrides):
    from eqflow.stages.score_cache import score_key

    return score_key(compose_train(list(overrides)))


@pytest.mark.slow
def test_the_score_cache_key_holds_the_trainer_settings_that_change_the_fit():
    plain = _score_key()
    assert "trainer" not in plain  # the default trainer keeps the entries cached before
    for flag in (
        "+trainer.limit_train_batches=1",
        "+trainer.fast_dev_run=true",
        "trainer.precision=bf16-mixed",
        "debug=limit",
    ):
        assert _score_key(flag) != plain, flag
    for neutral in ("trainer.enable_progress_bar=true", "trainer.log_every_n_steps=50"):
        assert _score_key(neutral) == plain, neutral
    # the score's own precision decides its fit, whatever the trainer's
    assert _score_key("+score.precision=bf16-mixed") == _score_key(
        "+score.precision=bf16-mixed", "trainer.precision=32"
    )


def test_auto_precision_is_bfloat16_only_where_it_is_native_and_keys_the_cache_so(monkeypatch):
    from eqflow.stages import score_cache

    for native, expected in ((True, "bf16-mixed"), (False, None)):
        monkeypatch.setattr(score_cache, "bfloat16_is_fast", lambda accelerator="cpu": native)
        cfg = compose_train(["experiment=alife"], tiny=False)
        assert cfg.score.precision == "auto"
        assert score_cache.score_precision(cfg) == expected
        explicit = "bf16-mixed" if native else "null"
        same = compose_train(["experiment=alife", f"score.precision={explicit}"], tiny=False)
        assert score_cache.score_key(cfg) == score_cache.score_key(same)


@pytest.mark.slow
def test_a_debug_run_leaves_the_shared_cache_untouched(tmp_path, monkeypatch):
    from eqflow import pipeline

    shared = tmp_path / "shared"
    monkeypatch.setenv("EQFLOW_CACHE_DIR", str(shared))
    cfg = compose_train(
        [
            "debug=fast_dev_run",
            "measure.lyapunov.steps=20",
            "measure.lyapunov.burn_in=0",
            "measure.mmd.steps=5",
            "measure.figures.steps=10",
            f"paths.output_dir={tmp_path / 'run'}",
        ],
        tiny=False,
    )
    result = pipeline.train(cfg)
    assert not shared.exists()
    assert result.metrics["score/cache_path"].startswith(str(tmp_path / "run" / "cache"))
    assert result.metrics["score/cache_hit"] is False


def test_an_unsupported_accelerator_names_the_key_and_the_choices():
    from eqflow.config import validate
    from eqflow.errors import ConfigError

    with pytest.raises(ConfigError, match=r"trainer\.accelerator='tpu'.*one of cpu, gpu, cuda"):
        validate(compose_train(["trainer.accelerator=tpu"]))
    with pytest.raises(ConfigError, match=r"trainer\.precision='half'"):
        validate(compose_train(["trainer.precision=half"]))


@pytest.mark.slow
def test_remeasuring_a_run_with_a_corrupt_metrics_json_says_so(tmp_path, caplog):
    from omegaconf import OmegaConf

    from eqflow import pipeline
    from eqflow.runs import measure_run

    cfg = compose_train(["logger=none"], tmp_path)
    result = pipeline.train(cfg)
    (result.output_dir / ".hydra").mkdir()
    (result.output_dir / ".hydra" / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (result.output_dir / "metrics.json").write_text('{"mmd/final": 0.1, "lyap')
    with caplog.at_level("WARNING"):
        metrics = measure_run(result.output_dir, tmp_path / "again", str(tmp_path / "cache"))
    assert "unreadable" in caplog.text and str(result.output_dir / "metrics.json") in caplog.text
    assert isinstance(metrics["mmd/final"], float)


# ---- W&B: runs that compare --------------------------------------------------------------------


def _wandb_log(folder) -> bytes:
    """The bytes of the offline W&B run(s) under ``folder``: their records (config, tags,
    artifacts) as W&B wrote them for ``wandb sync``."""
    files = sorted(folder.glob("wandb/offline-run-*/*.wandb"))
    assert files, f"no offline W&B run under {folder}"
    return b"".join(f.read_bytes() for f in files)


@pytest.mark.slow
def test_a_sweep_and_its_evaluation_form_one_wandb_group_with_artifacts(tmp_path):
    sweep = tmp_path / "2026-12-06_10-00-00"
    done = run_script(
        "train.py",
        "-m",
        "seed=0,1",
        "tags=[trial]",
        *TINY,
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.output[-3000:]
    jobs = [json.loads((sweep / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert {m["wandb/group"] for m in jobs} == {"toy2d-2026-12-06_10-00-00"}
    assert len({m["wandb/name"] for m in jobs}) == 2 and len({m["wandb/run_id"] for m in jobs}) == 2
    for n, metrics in enumerate(jobs):
        record = _wandb_log(sweep / str(n))
        assert metrics["wandb/run_id"].encode() in record
        assert f"seed={n}".encode() in record and b"trial" in record  # tags
        assert b"flow-" in record and b"score-model" in record  # the artifacts
    evaluation = tmp_path / "eval"
    done = run_script(
        "evaluate.py",
        f"sweep={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        *[o for o in CHEAP_EVAL if not o.startswith("logger")],
        f"hydra.run.dir={evaluation}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.output[-3000:]
    rows = (evaluation / "runs.csv").read_text().splitlines()
    assert rows[0].startswith("run,seed,mmd/final") and len(rows) == 3
    assert float(rows[1].split(",")[2]) == pytest.approx(jobs[0]["mmd/final"], rel=1e-5)
    record = _wandb_log(evaluation)
    assert b"toy2d-2026-12-06_10-00-00" in record and b"evaluation" in record


@pytest.mark.slow
def test_a_resumed_run_continues_its_wandb_run(tmp_path, monkeypatch):
    from eqflow import pipeline

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    first = pipeline.train(compose_train(["logger=wandb"], tmp_path))
    ckpt = first.output_dir / "checkpoints" / "last.ckpt"
    cfg = compose_train(
        [
            "logger=wandb",
            f"ckpt_path={ckpt}",
            "trainer.max_epochs=3",
            f"paths.output_dir={tmp_path / 'resumed'}",
        ],
        tmp_path,
    )
    resumed = pipeline.train(cfg)
    assert resumed.metrics["wandb/run_id"] == first.metrics["wandb/run_id"]
    assert resumed.metrics["wandb/name"] == first.metrics["wandb/name"]


# ---- long work says what it does ---------------------------------------------------------------


@pytest.mark.slow
def test_each_measurement_is_announced_with_its_seconds(tmp_path, caplog):
    from eqflow import pipeline

    with caplog.at_level("INFO", logger="eqflow"):
        pipeline.train(compose_train(["logger=none"], tmp_path))
    for name in ("mmd", "lyapunov", "residual"):
        assert f"Measuring {name} ..." in caplog.text
        assert f"Measuring {name}: done in" in caplog.text


def test_progress_bars_follow_the_environment(monkeypatch):
    from eqflow.progress import bar

    monkeypatch.setenv("EQFLOW_PROGRESS", "0")
    assert bar(3, "x").disable
    monkeypatch.setenv("EQFLOW_PROGRESS", "1")
    assert not bar(3, "x").disable
