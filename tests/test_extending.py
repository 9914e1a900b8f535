"""The worked examples of docs/extending.md (examples/extending.py) run through the pipeline as a
user's own system, flow and measurement would."""

import sys
from pathlib import Path

import pytest
from helpers import compose_train
from omegaconf import open_dict

from eqflow import pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def examples_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT))  # as `python train.py` from the repository root


def test_a_system_a_flow_and_a_measurement_of_ones_own(tmp_path):
    cfg = compose_train(["logger=none", "measure.lyapunov=null"], tmp_path)
    with open_dict(cfg):
        cfg.data = {"_target_": "examples.extending.Vortex", "n_samples": 2000}
        cfg.flow.model = {"_target_": "examples.extending.ScaledRotationFlow", "lr": 0.05}
        cfg.measure.speed = {"_target_": "examples.extending.MeanSpeed", "n_points": 128}
    m = pipeline.train(cfg).metrics
    # the flow is a rotation of the score, and the score of a Gaussian points at its centre:
    # the field is the ground truth's up to sign and scale
    assert m["fidelity/cos_truth"] > 0.95
    # its one parameter was trained: |v| near |s| on noised data, so the speed is of order 1
    assert 0.2 < m["speed/mean"] < 5
    assert m["mmd/final"] < 10 * max(m["mmd/noise_floor"], 1e-3)


def test_a_bad_setting_of_ones_own_system_is_named(tmp_path):
    from eqflow.errors import ConfigError

    cfg = compose_train(["logger=none"], tmp_path)
    with open_dict(cfg):
        cfg.data = {"_target_": "examples.extending.Vortex", "n_samples": 1}
    with pytest.raises((ConfigError, ValueError), match="data.n_samples=1"):
        pipeline.train(cfg)
    assert sys.modules.get("examples.extending") is not None
