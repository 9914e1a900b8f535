"""Runs that cannot collide, lie or be lost: one test per defect of the reliability audit."""

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY_LORENZ as TINY_LORENZ_RUN
from helpers import compose_train, signal_train_when
from omegaconf import OmegaConf

from eqflow import pipeline
from eqflow.errors import ConfigError, NonFiniteLossError
from eqflow.io.cache import cached
from eqflow.models import EquilibriumFlowModule

ROOT = Path(__file__).resolve().parents[1]
TINY_LORENZ = [*TINY_LORENZ_RUN, "logger=none"]


def _train(overrides, tmp_path, out="run"):
    cfg = compose_train([*TINY_LORENZ, *overrides], tmp_path)
    cfg.paths.output_dir = str(tmp_path / out)
    return pipeline.train(cfg)


def _cli(script, *args, cwd, env=None, **kw):
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        text=True,
        capture_output=True,
        timeout=600,
        env=env,
        **kw,
    )


@pytest.mark.slow
def test_run_folders_claimed_in_the_same_second_differ(tmp_path):
    """Defect 1: two processes asking for one run folder get two folders."""
    base = str(tmp_path / "runs" / "lorenz" / "2026-01-01_00-00-00_seed0")
    code = (
        "import sys; from eqflow.io.run_folders import claim_run_dir; "
        "print(claim_run_dir(sys.argv[1]))"
    )
    got = [
        subprocess.run(
            [sys.executable, "-c", code, base], capture_output=True, text=True, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert got == [base, base + "_2"]
    assert all(Path(p).is_dir() for p in got)


@pytest.mark.slow
def test_a_checkpoint_of_another_score_model_is_refused(tmp_path):
    """Defect 2: resuming never swaps the configured score model for the checkpoint's."""
    first = _train([], tmp_path, "first")
    ckpt = first.output_dir / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match="another score model"):
        _train(["score.epochs=3", f"ckpt_path={ckpt}"], tmp_path, "second")


def test_non_finite_weights_are_never_checkpointed(tmp_path, monkeypatch):
    """Defect 3: weights that turn NaN stop the fit before their epoch is checkpointed."""

    def poisoned(self, outputs, batch, batch_idx):  # after the optimizer step of epoch 2
        if self.current_epoch == 1:
            with torch.no_grad():
                for p in self.net.parameters():
                    p.fill_(float("nan"))

    monkeypatch.setattr(EquilibriumFlowModule, "on_train_batch_end", poisoned, raising=False)
    with pytest.raises(NonFiniteLossError, match=r"(?s)weights became non-finite.*last\.ckpt"):
        _train(["trainer.max_epochs=3", "flow.batch_size=100000"], tmp_path)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"].startswith(
        "incomplete: NonFiniteLossError"
    )


@pytest.mark.slow
def test_corrupt_or_foreign_checkpoints_are_refused_at_start_up(tmp_path):
    """Defect 4: a clear error before any data or score work, never unsafe-loading advice."""
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(ConfigError, match="cannot be read as a checkpoint") as err:
        _train([f"ckpt_path={garbage}"], tmp_path, "a")
    assert "weights_only" not in str(err.value)
    assert not (tmp_path / "a").exists()  # refused before anything was written
    plain = tmp_path / "plain.ckpt"
    torch.save({"weights": torch.zeros(3)}, plain)
    with pytest.raises(ConfigError, match="not an eqflow flow checkpoint"):
        _train([f"ckpt_path={plain}"], tmp_path, "b")
    first = _train([], tmp_path, "first")
    with pytest.raises(ConfigError, match="another flow architecture"):
        _train(
            [
                "flow.model.hidden=[32,32]",
                f"ckpt_path={first.output_dir / 'checkpoints' / 'last.ckpt'}",
            ],
            tmp_path,
            "c",
        )


def test_altered_cache_contents_are_detected_and_rebuilt(tmp_path, caplog):
    """Defect 5: a cache entry whose bytes were changed fails its checksum and is rebuilt."""
    root = tmp_path / "cache"
    value = {"weights": torch.arange(100_000, dtype=torch.float32)}
    _, path, hit = cached("score", {"k": 1}, lambda: value, root)
    assert not hit
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 1000] = os.urandom(1000)
    path.write_bytes(bytes(blob))
    with caplog.at_level(logging.WARNING):
        again, _, hit = cached("score", {"k": 1}, lambda: value, root)
    assert not hit and "checksum" in caplog.text
    assert torch.equal(again["weights"], value["weights"])
    assert cached("score", {"k": 1}, lambda: None, root)[2]  # the rebuilt entry is a hit


def test_a_complete_cache_entry_is_read_without_a_lock(tmp_path, monkeypatch):
    """Defect 8: a read-only cache (simulated: taking a lock fails with EROFS) still serves
    its complete entries, and building one there names the fix."""
    from filelock import FileLock

    root = tmp_path / "cache"
    cached("data", {"k": 2}, lambda: torch.ones(3), root)

    def read_only(self, *a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(FileLock, "acquire", read_only)
    value, _, hit = cached("data", {"k": 2}, lambda: torch.zeros(3), root)
    assert hit and torch.equal(value, torch.ones(3))
    with pytest.raises(OSError, match="paths.cache_dir"):
        cached("data", {"k": 3}, lambda: torch.zeros(3), root)


@pytest.mark.slow
def test_evaluate_writes_beside_the_run_and_refuses_a_missing_sweep(tmp_path):
    """Defect 6: no ./None folder; a missing sweep is 'not a directory' and is not created."""
    cfg = compose_train(TINY_LORENZ, tmp_path)
    run = pipeline.train(cfg).output_dir
    (run / ".hydra").mkdir()
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")  # as Hydra writes it
    done = _cli(
        "evaluate.py",
        f"run={run}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        "logger=none",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (run / "evaluate").is_dir() and not (tmp_path / "None").exists()
    missing = tmp_path / "no" / "such" / "sweep"
    done = _cli("evaluate.py", f"sweep={missing}", "logger=none", cwd=tmp_path)
    assert done.returncode == 2 and "not a directory" in done.stdout + done.stderr
    assert not missing.exists() and not (tmp_path / "None").exists()


@pytest.mark.slow
def test_sigterm_mid_fit_exits_non_zero_and_marks_the_run_incomplete(tmp_path):
    """Defect 7: a stopped run is not reported as a success."""
    out = tmp_path / "run"
    code, output = signal_train_when(
        [
            *TINY_LORENZ,
            "score.epochs=2",
            "trainer.max_epochs=100000",
            "trainer.enable_progress_bar=false",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={out}",
        ],
        (out / "checkpoints" / "last.ckpt").exists,
        signal.SIGTERM,
        tmp_path,
    )
    assert code == 143, output[-2000:]
    assert "resume it with ckpt_path=" in output
    status = json.loads((out / "metrics.json").read_text())["status"]
    assert status.startswith("incomplete: RunInterrupted")
    assert not (out / "flow.pt").exists()


@pytest.mark.slow
def test_sigterm_during_score_training_exits_non_zero_and_keeps_its_last_epoch(tmp_path):
    """Second audit, defect 2: the score stage's SIGTERM is not a success either."""
    out, cache = tmp_path / "run", tmp_path / "cache"
    code, output = signal_train_when(
        [
            *TINY_LORENZ,
            "score.epochs=100000",
            "trainer.enable_progress_bar=false",
            f"paths.cache_dir={cache}",
            f"hydra.run.dir={out}",
        ],
        lambda: bool(list(cache.glob("score/*.partial/last.ckpt"))),
        signal.SIGTERM,
        tmp_path,
    )
    assert code == 143, output[-2000:]
    assert "run the same command again to resume it" in output
    assert list(cache.glob("score/*.partial/last.ckpt")) and not list(cache.glob("score/*.pt"))


@pytest.mark.parametrize(
    "override,key",
    [
        ("flow.model.lr=inf", "flow.model.lr"),
        ("flow.model.hidden=abc", "flow.model.hidden"),
        ("flow.model.hidden=[64,0]", "flow.model.hidden"),
    ],
)
def test_non_finite_and_malformed_values_fail_at_start_up(override, key, tmp_path):
    """Defect 9: caught by the start-up check, with the key named."""
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _train([override], tmp_path)
    assert not (tmp_path / "run").exists()


def test_nan_message_names_the_real_keys(tmp_path, monkeypatch):
    """Defect 10: the advice names flow.model.lr, the key that exists."""
    monkeypatch.setattr(
        EquilibriumFlowModule,
        "continuity_loss",
        lambda self, x, s: {
            "loss": torch.tensor(float("nan")),
            "div": torch.tensor(0.0),
            "v_dot_s": torch.tensor(0.0),
        },
    )
    with pytest.raises(NonFiniteLossError, match=r"flow\.model\.lr"):
        _train([], tmp_path)


def test_a_signal_during_a_file_write_stops_the_run_once_the_file_is_whole(tmp_path):
    """A SIGTERM raised inside torch.save's writer came out of its C++ code as a failed write
    ('a full disk?', exit 2); it is now deferred until the file is written and renamed."""
    import os
    import signal

    from eqflow.errors import RunInterrupted
    from eqflow.io.interrupts import stop_on_signals
    from eqflow.io.storage import atomic_write

    target = tmp_path / "last.ckpt"
    sent = []

    def write(f):
        torch.save({"w": torch.zeros(1000)}, f)
        os.kill(os.getpid(), signal.SIGTERM)  # delivered while the write is still going on
        sent.append(True)
        torch.save({"w": torch.ones(1000)}, f)

    with stop_on_signals(), pytest.raises(RunInterrupted) as stopped:
        atomic_write(target, write)
    assert sent and stopped.value.exit_code == 143
    assert torch.load(target)["w"].sum() == 0  # whole and readable (the first object written)
    assert not list(tmp_path.glob(".last.ckpt.*.tmp"))
