"""Exact equilibrium flows v = div A + A s: jets against autograd, div(p v) = 0 on a density with
a closed-form score, the training-free flow as the constant-A case, ensembles and batching."""

import pytest
import pytorch_lightning as pl
import torch
from helpers import compose_train
from torch.func import hessian, jacfwd, jacrev, vmap

from eqflow import pipeline
from eqflow.metrics.mmd import mmd2
from eqflow.metrics.residual import continuity_residual
from eqflow.models import EnergyScoreModule, ExactFlowModule, TrainingFreeFlow
from eqflow.models.ensemble import ExactEnsembleFlowModule
from eqflow.models.score import Score
from eqflow.nets.jet import JetMLP
from eqflow.runs import load_run


class MixtureScore(Score, torch.nn.Module):
    """A Gaussian mixture's exact score, read at the clean level (alpha = 1)."""

    def __init__(self, mixture):
        torch.nn.Module.__init__(self)
        self.mixture = mixture
        self.register_buffer("alpha", torch.tensor(1.0, dtype=torch.float64))

    def score(self, x):
        return self.mixture.score(x)


@pytest.fixture
def exact_flow(mixture):
    torch.manual_seed(0)
    score = EnergyScoreModule(dim=2)  # placeholder: replaced by the closed-form score below
    flow = ExactFlowModule(score, 2, hidden=[32, 32]).double().eval()
    flow.score_model = MixtureScore(mixture)
    x = mixture.sample(4096, torch.Generator().manual_seed(1))
    flow.calibrate(x)
    return flow


@pytest.mark.parametrize("activation", ["silu", "tanh"])
def test_jets_equal_autograd_derivatives(activation):
    torch.manual_seed(0)
    net = JetMLP(3, 3, [16, 16], activation, n_freqs=2, members=2).double()
    x = torch.randn(2, 7, 3, dtype=torch.float64)
    value, jac, hess = net.jet(x, 2)
    for k in range(2):

        def f(y, k=k):
            return net(y.reshape(1, 1, 3).expand(2, 1, 3).contiguous())[k, 0]

        assert torch.allclose(value[k], vmap(f)(x[k]), atol=1e-12)
        assert torch.allclose(jac[k], vmap(jacfwd(f))(x[k]).transpose(-1, -2), atol=1e-12)
        assert torch.allclose(hess[k], vmap(hessian(f))(x[k]).permute(0, 2, 3, 1), atol=1e-12)


def test_exact_flow_satisfies_the_equilibrium_equation(exact_flow, mixture):
    """div(p v) = 0 at random points, p v and its divergence by reverse-mode autograd (an
    independent path from the forward jets the flow is built with)."""
    x = torch.randn(64, 2, dtype=torch.float64) * 1.5

    def p_times_v(y):
        return torch.exp(mixture.log_prob(y[None]))[0] * exact_flow.velocity(y[None])[0]

    jac = vmap(jacrev(p_times_v))(x)
    div = torch.diagonal(jac, dim1=-2, dim2=-1).sum(-1)
    scale = vmap(p_times_v)(x).norm(dim=-1).mean()
    assert div.abs().max() < 1e-10 * max(float(scale), 1.0)
    # the flow moves: not the zero field
    assert exact_flow.velocity(x).norm(dim=-1).mean() > 0.1
    res = continuity_residual(exact_flow.velocity, exact_flow.score, x)
    assert res["relative"] < 1e-10


@pytest.mark.slow
def test_exact_flow_keeps_the_density_at_the_noise_floor(exact_flow, mixture):
    """MMD^2 between the flowed points and a fresh draw stays within the spread MMD^2 has
    between independent draws; the same flow plus half the score (not an equilibrium flow)
    leaves it."""
    from eqflow.dynamics.integrators import integrate_ode

    g = torch.Generator().manual_seed(3)
    start, other = mixture.sample(512, g), mixture.sample(512, g)
    spread = max(
        abs(float(mmd2(mixture.sample(512, g), mixture.sample(512, g), 0.5))) for _ in range(5)
    )
    tolerance = 3 * spread
    with torch.no_grad():
        path = integrate_ode(exact_flow.velocity, start, 0.05, 100)
        leaky = integrate_ode(
            lambda y: exact_flow.velocity(y) + 0.5 * exact_flow.score(y), start, 0.05, 100
        )
    assert (path[-1] - start).norm(dim=-1).mean() > 0.3  # the points travel
    for t in (25, 50, 100):
        assert abs(float(mmd2(path[t], other, 0.5))) < tolerance, t
    assert float(mmd2(leaky[-1], other, 0.5)) > 3 * tolerance


def test_a_constant_skew_field_is_the_training_free_flow(mixture):
    score = MixtureScore(mixture)
    free = TrainingFreeFlow(EnergyScoreModule(dim=3), 3, seed=5).double()
    free.score_model = score
    flow = ExactFlowModule(EnergyScoreModule(dim=3), 3, hidden=[8]).double()
    flow.score_model = score
    with torch.no_grad():
        for w, b in zip(flow.net.weights, flow.net.biases):
            w.zero_()
            b.zero_()
        rows, cols = torch.triu_indices(3, 3, 1)
        flow.net.biases[-1][0] = free.D[rows, cols]
        flow.running_sq.fill_(3.0)  # scale 1
    mixture3 = type(mixture)([[0.0, 0.0, 0.0], [1.0, -1.0, 0.5]], 0.7)
    score.mixture = mixture3
    x = torch.randn(50, 3, dtype=torch.float64)
    assert torch.allclose(flow.velocity(x), free.velocity(x), atol=1e-12)


def test_a_conservative_score_leaves_no_residual():
    torch.manual_seed(0)
    score = EnergyScoreModule(dim=3, hidden=[16, 16]).double()
    flow = ExactFlowModule(score, 3, hidden=[16, 16]).double().eval()
    x = torch.randn(256, 3, dtype=torch.float64)
    jac = vmap(jacfwd(lambda y: score.score(y[None])[0]))(x)
    assert torch.allclose(jac, jac.transpose(-1, -2), atol=1e-10)  # a gradient field
    res = continuity_residual(flow.velocity, flow.score, x)
    assert res["relative"] < 1e-10
    # a score with a non-conservative part leaves <A, antisym(ds)>: the residual is not zero
    from eqflow.models import ScoreModule

    flow.score_model = ScoreModule(dim=3).double()
    assert continuity_residual(flow.velocity, flow.score, x)["relative"] > 1e-3


def test_ensemble_members_start_from_single_weights_and_batch_alike():
    from eqflow.protocols.chaos import stacked_field

    score = EnergyScoreModule(dim=3, hidden=[8])
    ensemble = ExactEnsembleFlowModule(score, 3, seeds=[4, 5], hidden=[16, 16]).eval()
    ensemble.running_sq.copy_(torch.tensor([2.0, 5.0]))
    x = torch.randn(40, 3)
    batched = ensemble.velocity(x)
    members = []
    for k, seed in enumerate([4, 5]):
        pl.seed_everything(seed, verbose=False)
        single = ExactFlowModule(score, 3, hidden=[16, 16])
        member = ensemble.member(k)
        for key, value in single.net.state_dict().items():
            assert torch.equal(member.net.state_dict()[key], value), (seed, key)
        assert torch.allclose(member.velocity(x), batched[k], atol=1e-5)
        members.append(member)
    stacked = stacked_field(members)
    assert torch.allclose(stacked(x.double().expand(2, 40, 3)).float(), batched, atol=1e-5)


TINY_LORENZ = [
    "experiment=lorenz",
    "flow=exact",
    "evaluate=false",
    "data.n_trajectories=2",
    "data.n_steps=400",
    "data.burn_in_steps=100",
    "logger=none",
    "trainer.max_epochs=2",
    "flow.batch_size=128",
    "flow.model.hidden=[16,16]",
    "flow.ensemble=1",
    "measure.lyapunov.compile=false",
]


@pytest.mark.slow
def test_an_exact_ensemble_member_is_the_single_run_of_its_seed(tmp_path):
    def train(overrides, out):
        cfg = compose_train([*TINY_LORENZ, *overrides], tmp_path)
        cfg.paths.output_dir = str(tmp_path / out)
        return pipeline.train(cfg)

    ens = train(["seed=3", "flow.ensemble=2"], "ens")
    single = train(["seed=4"], "single")
    run = load_run(ens.output_dir / "seed4")
    assert isinstance(run.flow, ExactFlowModule)
    for key, value in single.flow.state_dict().items():
        assert torch.allclose(run.flow.state_dict()[key], value, rtol=1e-4, atol=1e-5), key
    assert run.metrics["residual/relative"] == pytest.approx(
        single.metrics["residual/relative"], rel=1e-3
    )
    assert run.metrics["mmd/final"] == pytest.approx(
        single.metrics["mmd/final"], rel=1e-3, abs=1e-6
    )


def test_exact_flows_refuse_images_with_the_fix(tmp_path):
    from eqflow.errors import ConfigError

    cfg = compose_train(["flow=exact"], tmp_path)
    with pytest.raises(ConfigError, match="flow=training_free"):
        pipeline.build_flow(cfg, EnergyScoreModule(dim=2), torch.zeros(4, 2, 8, 8))


def test_exact_energy_gradient_equals_autograd():
    from torch.func import grad

    from eqflow.nets.mlp import EnergyMLP

    torch.manual_seed(0)
    for activation in ("silu", "tanh"):
        net = EnergyMLP(3, [16, 16], activation).double()
        x, t = torch.randn(10, 3, dtype=torch.float64), torch.rand(10, dtype=torch.float64)
        expected = grad(lambda y: net.energy(y, t).sum())(x)
        assert torch.allclose(net(x, t), expected, atol=1e-12)


def test_a_group_of_exact_flows_is_integrated_as_one_for_mmd():
    from eqflow.analysis.study import Groups, mmd_curves
    from eqflow.protocols.chaos import stacked_field

    score = EnergyScoreModule(dim=3, hidden=[8]).double()
    flows = []
    for seed in range(3):
        torch.manual_seed(seed)
        flow = ExactFlowModule(score, 3, hidden=[16]).double().eval()
        flow.running_sq.fill_(2.0 + seed)
        flows.append(flow)
    one_by_one, together = Groups(), Groups()
    for k, flow in enumerate(flows):
        one_by_one.add("learned", str(k), flow.velocity)
        together.add("learned", str(k), flow.velocity)
    together.stacked["learned"] = stacked_field(flows)
    starts = torch.randn(3, 64, 3, dtype=torch.float64)
    a = mmd_curves(one_by_one, starts, 0.1, 10, 0.5)["learned"]
    b = mmd_curves(together, starts, 0.1, 10, 0.5)["learned"]
    assert torch.allclose(a, b, atol=1e-10)
    # member k starts from set k: its curve is the one measured from that set alone
    from eqflow.protocols.preservation import mmd_curve

    assert torch.allclose(a[2], mmd_curve(flows[2].velocity, starts[2], 0.1, 10, 0.5), atol=1e-10)
    assert not torch.allclose(a[2], mmd_curve(flows[2].velocity, starts[0], 0.1, 10, 0.5))


def test_the_residual_of_a_training_free_flow_is_measured_against_speed_times_score(mixture):
    """v = D s has v . s = 0 identically: the residual relative to rms(v . s) is undefined (NaN),
    relative to rms(|v| |s|) it is rounding; a field that is not an equilibrium flow reads ~1."""
    import math

    free = TrainingFreeFlow(EnergyScoreModule(dim=2), 2, seed=1).double()
    free.score_model = MixtureScore(mixture)
    x = mixture.sample(256, torch.Generator().manual_seed(0))
    res = continuity_residual(free.velocity, free.score, x)
    assert math.isnan(res["relative"]) and res["relative_to_speed_score"] < 1e-12
    leaky = continuity_residual(lambda y: free.velocity(y) + free.score(y), free.score, x)
    assert leaky["relative"] > 0.1 and leaky["relative_to_speed_score"] > 0.1
