"""Flow ensembles: K seeds trained as one vectorised model, written as K runs."""

import json

import pytest
import pytorch_lightning as pl
import torch
from helpers import TINY_LORENZ as TINY_LORENZ_RUN
from helpers import compose_train

from eqflow import pipeline
from eqflow.models import EquilibriumFlowModule, ScoreModule
from eqflow.models.ensemble import EnsembleFlowModule
from eqflow.runs import load_run, run_dirs

TINY_LORENZ = [*TINY_LORENZ_RUN, "logger=none", "trainer.max_epochs=3", "flow.batch_size=256"]


def _train(overrides, tmp_path, out):
    cfg = compose_train([*TINY_LORENZ, *overrides], tmp_path)
    cfg.paths.output_dir = str(tmp_path / out)
    return pipeline.train(cfg)


def test_a_member_starts_from_the_single_runs_weights():
    score = ScoreModule(dim=3)
    ensemble = EnsembleFlowModule(score, 3, seeds=[4, 5, 6], hidden=[16, 16])
    for k, seed in enumerate([4, 5, 6]):
        pl.seed_everything(seed, verbose=False)
        single = EquilibriumFlowModule(score, 3, hidden=[16, 16])
        member = ensemble.member(k)
        for key, value in single.net.state_dict().items():
            assert torch.equal(member.net.state_dict()[key], value), (seed, key)


def test_batched_field_equals_each_members_field():
    score = ScoreModule(dim=3)
    ensemble = EnsembleFlowModule(score, 3, seeds=[0, 1], hidden=[16, 16]).eval()
    x = torch.randn(50, 3)
    batched = ensemble.velocity(x)
    for k in range(2):
        assert torch.allclose(batched[k], ensemble.member(k).velocity(x), atol=1e-6)


@pytest.mark.parametrize(
    "flow_settings",
    [
        ["flow.model.divergence=exact"],
        ["flow.model.divergence=hutchinson", "flow.model.n_probes=4"],
    ],
)
@pytest.mark.slow
def test_a_member_is_the_single_run_of_its_seed(flow_settings, tmp_path):
    """Same initial weights, batches, noise and probes: after three epochs member k's weights
    and measurements are those of a single run of seed + k."""
    ens = _train(["seed=3", "flow.ensemble=2", *flow_settings], tmp_path, "ens")
    single = _train(["seed=4", *flow_settings], tmp_path, "single")
    member_dir = ens.output_dir / "seed4"
    run = load_run(member_dir)
    member = run.flow.state_dict()
    # the last layer's bias feeds the batch norm, which subtracts it: its gradient is rounding
    # noise that Adam amplifies, so it (and the running mean it shifts) is not compared; the
    # field is
    last_bias = max(k for k in member if k.startswith("net.net.") and k.endswith(".bias"))
    for key, value in single.flow.state_dict().items():
        if key in (last_bias, "net.norm.running_mean"):
            continue
        assert torch.allclose(member[key], value, rtol=1e-4, atol=1e-5), key
    x = run.data.x[:200] * torch.sqrt(run.flow.alpha)
    assert torch.allclose(run.flow.velocity(x), single.flow.eval().velocity(x), atol=1e-4)
    a = json.loads((member_dir / "metrics.json").read_text())
    b = single.metrics
    for key in ("mmd/final", "fidelity/cos_truth", "lyapunov/max"):
        assert a[key] == pytest.approx(b[key], rel=1e-3, abs=1e-5), key


@pytest.mark.slow
def test_ensemble_run_is_read_back_as_a_sweep_of_its_members(tmp_path):
    from omegaconf import OmegaConf

    cfg = compose_train([*TINY_LORENZ, "seed=0", "flow.ensemble=3"], tmp_path)
    result = pipeline.train(cfg)
    (result.output_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, result.output_dir / ".hydra" / "config.yaml")  # as Hydra writes it
    dirs = run_dirs(result.output_dir)
    assert [d.name for d in dirs] == ["seed0", "seed1", "seed2"]
    marker = json.loads((result.output_dir / "members.json").read_text())
    assert marker == {"seeds": [0, 1, 2], "members": ["seed0", "seed1", "seed2"]}
    # the marker, not the config, tells an ensemble's folder from a run's
    cfg.flow.ensemble = 1
    OmegaConf.save(cfg, result.output_dir / ".hydra" / "config.yaml")
    assert [d.name for d in run_dirs(result.output_dir)] == ["seed0", "seed1", "seed2"]
    run = load_run(dirs[2])
    assert int(run.cfg.seed) == 2 and run.metrics["ensemble/member"] == 2
    assert isinstance(run.flow, EquilibriumFlowModule)


@pytest.mark.slow
def test_an_interrupted_ensemble_resumes_to_the_same_weights(tmp_path, monkeypatch):
    from helpers import cut_off_in_epoch

    full = _train(["seed=0", "flow.ensemble=2"], tmp_path, "full")
    cut_off_in_epoch(monkeypatch, 1)
    with pytest.raises(RuntimeError, match="power cut"):
        _train(["seed=0", "flow.ensemble=2"], tmp_path, "cut")
    monkeypatch.undo()
    ckpt = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    resumed = _train(["seed=0", "flow.ensemble=2", f"ckpt_path={ckpt}"], tmp_path, "cut")
    for key, value in full.flow.state_dict().items():
        assert torch.allclose(resumed.flow.state_dict()[key], value, atol=1e-6), key


def test_batched_lyapunov_equals_one_flow_at_a_time():
    from eqflow.data.base import random_subset  # noqa: F401  (the starts flow_lyapunov draws)
    from eqflow.protocols.chaos import flow_lyapunov, flow_lyapunov_many

    score = ScoreModule(dim=3)
    flows = []
    for seed in range(3):
        pl.seed_everything(seed, verbose=False)
        flow = EquilibriumFlowModule(score, 3, hidden=[16, 16]).eval()
        flow.calibrate(torch.randn(500, 3))
        flows.append(flow)
    data = torch.randn(200, 3, generator=torch.Generator().manual_seed(1))
    settings = dict(n_trajectories=4, dt=0.1, steps=300, burn_in=20, bound=4.0, record_at=150)
    batched = flow_lyapunov_many(
        flows, data, [torch.Generator().manual_seed(7 + k) for k in range(3)], **settings
    )
    for k, flow in enumerate(flows):
        alone = flow_lyapunov(
            flow, data, generator=torch.Generator().manual_seed(7 + k), **settings
        )
        for key in ("lyapunov", "mean_speed", "lyapunov_at_record"):
            assert batched[k][key] == pytest.approx(alone[key], rel=1e-6, abs=1e-9), key
        assert batched[k]["n_kept"] == alone["n_kept"]
