"""End-to-end runs of the pipeline with tiny settings: every dataset, both flow kinds, the
loggers, resuming, the NaN stop, the score cache and evaluate.py."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import compose_train, cut_off_in_epoch
from omegaconf import OmegaConf

from eqflow import pipeline
from eqflow.errors import NonFiniteLossError
from eqflow.evaluation import evaluate_run
from eqflow.runs import RunLoadError
from eqflow.stages import data as data_stage
from eqflow.stages import score as score_stage

ROOT = Path(__file__).resolve().parents[1]
TINY_LORENZ = ["data.n_trajectories=2", "data.n_steps=400", "data.burn_in_steps=100"]


def _train(overrides, tmp_path):
    cfg = compose_train(["logger=none", *overrides], tmp_path)
    return pipeline.train(cfg)


def _numbers(metrics, prefix):
    return {k: v for k, v in metrics.items() if k.startswith(prefix)}


@pytest.mark.parametrize(
    "data,extra", [("two_peaks", []), ("ring", []), ("two_moons", []), ("lorenz", TINY_LORENZ)]
)
@pytest.mark.slow
def test_quick_run_on_each_dataset(data, extra, tmp_path):
    result = _train([f"data={data}", *extra], tmp_path)
    run = result.output_dir
    m = json.loads((run / "metrics.json").read_text())
    assert (run / "flow.pt").exists() and (run / "checkpoints" / "last.ckpt").exists()
    assert len(m["mmd/curve"]) == 6 and m["mmd/final"] == m["mmd/curve"][-1]
    assert m["mmd/curve"][0] == pytest.approx(0.0, abs=1e-9)  # the start set against itself
    assert "lyapunov/max" in m and "lyapunov/speed_normalised" in m
    assert (run / "figures" / "loss.png").exists() and (run / "figures" / "mmd.png").exists()
    if data == "lorenz":
        assert 0.0 <= m["fidelity/cos_truth"] <= 1.0
        assert (run / "figures" / "trajectory_3d.png").exists()
    else:
        assert "fidelity/cos_truth" not in m
        assert (run / "figures" / "quiver.png").exists()


@pytest.mark.slow
def test_training_free_flow_runs_without_training(tmp_path):
    result = _train(["flow=training_free", "data=lorenz", *TINY_LORENZ], tmp_path)
    m = result.metrics
    assert "time/flow_fit_s" in m and "fidelity/cos_truth" in m
    d = result.flow.D
    torch.testing.assert_close(d.T, -d)
    # the flow is v = D s, orthogonal to the score at every point
    x = torch.randn(64, 3)
    v, s = result.flow.velocity(x), result.flow.score(x)
    assert (v * s).sum(-1).abs().max() < 1e-5 * (v.norm() * s.norm())


@pytest.mark.slow
def test_seed_controls_every_draw(tmp_path):
    a = _train(["seed=3"], tmp_path / "a").metrics
    b = _train(["seed=3"], tmp_path / "b").metrics
    c = _train(["seed=4"], tmp_path / "c").metrics
    assert a["mmd/curve"] == b["mmd/curve"] and a["lyapunov/max"] == b["lyapunov/max"]
    assert a["mmd/curve"] != c["mmd/curve"]


def test_nan_loss_stops_the_run_with_a_message(tmp_path, monkeypatch):
    build = pipeline.build_flow

    def poisoned(*args, **kwargs):
        flow = build(*args, **kwargs)
        with torch.no_grad():
            next(flow.net.parameters()).fill_(float("nan"))
        return flow

    monkeypatch.setattr(pipeline, "build_flow", poisoned)
    cfg = compose_train(["logger=none"], tmp_path)
    with pytest.raises(NonFiniteLossError, match="flow loss became nan at step 0.*lr"):
        pipeline.train(cfg)
    assert not (tmp_path / "run" / "flow.pt").exists()


@pytest.mark.slow
def test_resume_from_last_checkpoint(tmp_path):
    first = _train(["trainer.max_epochs=2"], tmp_path / "first")
    last = first.output_dir / "checkpoints" / "last.ckpt"
    before = torch.load(last, weights_only=False)
    resumed = _train(["trainer.max_epochs=3", f"ckpt_path={last}"], tmp_path / "second")
    ckpt = torch.load(resumed.output_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["epoch"] == before["epoch"] + 1
    steps_per_epoch = before["global_step"] // 2
    assert ckpt["global_step"] == 3 * steps_per_epoch  # continued, not restarted
    with pytest.raises(FileNotFoundError, match="ckpt_path=.*does not exist"):
        _train([f"ckpt_path={tmp_path / 'missing.ckpt'}"], tmp_path / "third")


@pytest.mark.slow
def test_a_run_cut_off_mid_fit_resumes_from_its_last_epoch(tmp_path, monkeypatch):
    cut_off_in_epoch(monkeypatch, 2, key="train/loss")
    with pytest.raises(RuntimeError, match="power cut"):
        _train(["trainer.max_epochs=3"], tmp_path / "cut")
    monkeypatch.undo()
    last = tmp_path / "cut" / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 1  # written after epoch 2 of 3
    resumed = _train(["trainer.max_epochs=3", f"ckpt_path={last}"], tmp_path / "resumed")
    straight = _train(["trainer.max_epochs=3"], tmp_path / "straight")
    ckpt = torch.load(resumed.output_dir / "checkpoints" / "last.ckpt", weights_only=False)
    done = torch.load(straight.output_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert (ckpt["epoch"], ckpt["global_step"]) == (done["epoch"], done["global_step"])
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # one file, overwritten


@pytest.mark.slow
def test_score_cache_is_reused_and_a_corrupt_entry_rebuilt(tmp_path, caplog):
    first = _train([], tmp_path)
    assert first.metrics["score/cache_hit"] is False
    path = Path(first.metrics["score/cache_path"])
    second = _train([], tmp_path)
    assert second.metrics["score/cache_hit"] is True
    path.write_bytes(b"not a torch file")
    with caplog.at_level(logging.WARNING):
        third = _train([], tmp_path)
    assert third.metrics["score/cache_hit"] is False
    assert "corrupt" in caplog.text and str(path) in caplog.text
    torch.testing.assert_close(
        third.flow.score_model.state_dict(), first.flow.score_model.state_dict()
    )


@pytest.mark.slow
def test_interrupted_score_training_resumes_from_its_last_epoch(tmp_path, monkeypatch, caplog):
    cfg = compose_train(["logger=none", "score.epochs=3"], tmp_path)
    system, snaps = data_stage.load_data(cfg)
    cut_off_in_epoch(monkeypatch, 2)
    with pytest.raises(RuntimeError, match="power cut"):
        score_stage.load_score(cfg, system, snaps)
    partial = list((tmp_path / "cache" / "score").glob("*.partial"))
    assert len(partial) == 1 and (partial[0] / "last.ckpt").exists()
    assert not list((tmp_path / "cache" / "score").glob("*.pt"))  # nothing half-done cached
    monkeypatch.undo()

    with caplog.at_level(logging.INFO):
        resumed, info = score_stage.load_score(cfg, system, snaps)
    assert (
        "Resuming the interrupted score training" in caplog.text and "after epoch 2" in caplog.text
    )
    assert not partial[0].exists()  # cleaned up once the cache entry is written
    assert len(info["loss_history"]) == 3  # the curve continues over the interruption

    straight = compose_train(["logger=none", "score.epochs=3"], tmp_path / "straight")
    _, straight_info = score_stage.load_score(straight, system, snaps)
    assert info["loss_history"][:2] == straight_info["loss_history"][:2]
    assert info["score/train_seconds"] > 0


@pytest.mark.slow
def test_wandb_logs_offline_with_flattened_config(tmp_path):
    result = pipeline.train(compose_train(["logger=wandb"], tmp_path))
    runs = list((result.output_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    # offline runs keep config, history and summary in the run's protobuf log (for `wandb sync`)
    (log_file,) = runs[0].glob("run-*.wandb")
    blob = log_file.read_bytes()
    for key in (
        b"flow.model.lr",
        b"data._target_",
        b"train/loss",
        b"mmd/final",
        b"lyapunov/max",
        b"figures/flow",
    ):
        assert key in blob, key


@pytest.mark.slow
def test_csv_logger_writes_metrics(tmp_path):
    result = pipeline.train(compose_train(["logger=csv"], tmp_path))
    files = list(result.output_dir.rglob("metrics.csv"))
    assert files and "train/loss" in files[0].read_text()


@pytest.mark.slow
def test_evaluate_recomputes_a_finished_run(tmp_path):
    cfg = compose_train(["logger=none"], tmp_path)
    result = pipeline.train(cfg)
    (result.output_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, result.output_dir / ".hydra" / "config.yaml")
    again = evaluate_run(result.output_dir, tmp_path / "eval")
    assert again["mmd/curve"] == pytest.approx(result.metrics["mmd/curve"], abs=1e-6)
    assert again["lyapunov/max"] == pytest.approx(result.metrics["lyapunov/max"], rel=1e-6)
    (result.output_dir / "flow.pt").unlink()
    with pytest.raises(RunLoadError, match="no flow.pt"):
        evaluate_run(result.output_dir, tmp_path / "eval2")
    with pytest.raises(RunLoadError, match="not an eqflow run directory"):
        evaluate_run(tmp_path, tmp_path / "eval3")


def _cli(script, *args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=600,
    )


@pytest.mark.slow
def test_command_line_train_then_evaluate(tmp_path):
    from helpers import TINY

    done = _cli(
        "train.py", "logger=none", *TINY, f"paths.cache_dir={tmp_path / 'cache'}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "runs" / "toy2d").iterdir()
    assert (run / "figures" / "quiver.png").exists() and (run / "metrics.json").exists()
    done = _cli("evaluate.py", f"run={run}", f"paths.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert '"mmd/final"' in done.stdout
    bad = _cli("train.py", "flow.model.lr=-1", cwd=tmp_path)
    assert bad.returncode != 0 and "flow.model.lr" in bad.stdout + bad.stderr
    bad = _cli("train.py", "data=lorentz", cwd=tmp_path)
    assert bad.returncode != 0 and "lorentz" in bad.stdout + bad.stderr


@pytest.mark.slow
def test_relaxation_stage_runs_in_the_last_epochs_at_its_learning_rate(tmp_path, monkeypatch):
    from eqflow.models import EquilibriumFlowModule

    seen = []
    start_epoch = EquilibriumFlowModule.on_train_epoch_start

    def record(self):
        start_epoch(self)
        seen.append(
            (self.current_epoch, self.relaxing, self.optimizers().optimizer.param_groups[0]["lr"])
        )

    monkeypatch.setattr(EquilibriumFlowModule, "on_train_epoch_start", record)
    _train(
        [
            "flow=mlp_paper",
            "flow.model.estimator=expected",
            "trainer.max_epochs=3",
            "flow.model.relax_epochs=1",
            "flow.model.relax_lr=0.001",
        ],
        tmp_path,
    )
    assert seen == [(0, False, 0.01), (1, False, 0.01), (2, True, 0.001)]


@pytest.mark.slow
def test_an_anchored_relaxation_resumed_from_a_plain_checkpoint_anchors_to_that_field(tmp_path):
    base = _train(
        ["flow=mlp_paper", "flow.model.estimator=expected", "trainer.max_epochs=2"],
        tmp_path / "base",
    )
    last = base.output_dir / "checkpoints" / "last.ckpt"
    relaxed = _train(
        [
            "flow=mlp_paper",
            "flow.model.estimator=expected",
            "trainer.max_epochs=3",
            "flow.model.relax_epochs=1",
            "flow.model.relax_lr=0.001",
            "flow.model.relax_anchor=1.0",
            f"ckpt_path={last}",
        ],
        tmp_path / "relaxed",
    )
    before = torch.load(last, weights_only=False)["state_dict"]
    after = torch.load(relaxed.output_dir / "flow.pt", weights_only=True)["state_dict"]
    assert bool(after["anchor_set"])
    weight = "net.net.0.weight"
    torch.testing.assert_close(after["anchor." + weight[4:]], before[weight])  # the stage's start
    assert not torch.equal(after[weight], before[weight])  # while the field itself moved on
