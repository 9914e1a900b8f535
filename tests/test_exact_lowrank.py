"""The scalable exact flow: v = div A + A s with A = sum_k (u_k w_k^T - w_k u_k^T) from a hollow
network, checked against autograd on Gaussians whose score is known in closed form."""

from __future__ import annotations

import pytest
import torch

from eqflow.models.exact_lowrank import hutchinson_strain, lowrank_exact_field
from eqflow.nets.hollow import HollowNet


def gaussian_score(d: int, dtype):
    """s(x) = -P x for a random precision P (symmetric positive definite): a conservative score."""
    g = torch.Generator().manual_seed(d)
    m = torch.randn(d, d, generator=g, dtype=dtype) / d**0.5
    precision = m @ m.T + 0.5 * torch.eye(d, dtype=dtype)
    return lambda x: -x @ precision


def per_point_jacobian(f, x):
    return torch.func.vmap(torch.func.jacrev(lambda z: f(z[None])[0]))(x)


def test_the_hollow_network_never_sees_its_own_coordinate():
    torch.manual_seed(0)
    net = HollowNet(7, 3, (16, 16)).double()
    x = torch.randn(5, 7, dtype=torch.float64)
    jac = per_point_jacobian(net, x)  # (B, d, C, d)
    assert jac.diagonal(dim1=1, dim2=3).abs().max() < 1e-14
    assert jac.abs().max() > 1e-2  # it does see the others


def test_the_tangents_are_the_jacobian_along_each_direction():
    torch.manual_seed(1)
    net = HollowNet(6, 4, (16, 16)).double()
    x = torch.randn(5, 6, dtype=torch.float64)
    directions = torch.randn(3, 5, 6, dtype=torch.float64)
    _, along = net.with_tangents(x, directions)
    jac = per_point_jacobian(net, x)  # (B, d, C, d)
    expected = torch.einsum("bicj,tbj->tbic", jac, directions)
    assert torch.allclose(along, expected, atol=1e-12)


@pytest.mark.parametrize("d", [10, 40])
@pytest.mark.parametrize(
    "dtype, bound, scale_bound", [(torch.float64, 1e-12, 1e-14), (torch.float32, 2e-5, 1e-6)]
)
def test_div_p_v_vanishes_against_an_autograd_divergence(d, dtype, bound, scale_bound):
    """div(p v) / p = div v + v . s: zero for any weights. Relative to rms(v . s) (float64:
    ~1e-15 measured; float32: 1.5-2.2e-6, the rounding of the sums, against a v . s that is
    itself a cancellation) and to rms(|v| |s|), the size of each term (float32: 2.6e-8)."""
    torch.manual_seed(d)
    net = HollowNet(d, 8, (32, 32)).to(dtype)
    score = gaussian_score(d, dtype)

    def field(x):
        return lowrank_exact_field(net, x, score(x))

    x = torch.randn(64, d, dtype=dtype)
    div = per_point_jacobian(field, x).diagonal(dim1=-2, dim2=-1).sum(-1)
    v, s = field(x), score(x)
    v_dot_s = (v * s).sum(-1)
    rms = (div + v_dot_s).pow(2).mean().sqrt()
    assert rms / v_dot_s.pow(2).mean().sqrt() < bound, float(rms)
    term_size = (v.norm(dim=-1) * s.norm(dim=-1)).pow(2).mean().sqrt()
    assert rms / term_size < scale_bound, float(rms / term_size)
    assert v_dot_s.abs().mean() > 1e-2  # a field that moves, not one at rest


@pytest.mark.slow
def test_the_hutchinson_strain_is_the_exact_strain_in_expectation():
    torch.manual_seed(2)
    d = 5
    net = HollowNet(d, 4, (16,)).double()
    score = gaussian_score(d, torch.float64)

    def field(x):
        return lowrank_exact_field(net, x, score(x))

    x = torch.randn(32, d, dtype=torch.float64)
    jac = per_point_jacobian(field, x)
    exact = (0.5 * (jac + jac.transpose(-1, -2))).pow(2).sum((-1, -2)).mean()
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([hutchinson_strain(field, x, 1, g)[1].detach().mean() for _ in range(1000)])
    standard_error = draws.std() / len(draws) ** 0.5
    assert abs(draws.mean() - exact) < 5 * standard_error, (float(draws.mean()), float(exact))
    assert standard_error < 0.05 * exact  # the check has teeth: a 25 % bias would fail it


def test_the_strain_estimate_trains_the_network():
    torch.manual_seed(3)
    net = HollowNet(4, 4, (16,)).double()
    score = gaussian_score(4, torch.float64)
    _, strain = hutchinson_strain(
        lambda x: lowrank_exact_field(net, x, score(x)), torch.randn(8, 4, dtype=torch.float64), 2
    )
    strain.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
    assert sum(float(p.grad.abs().sum()) for p in net.parameters()) > 0


@pytest.mark.slow
def test_a_run_with_the_scalable_exact_flow_is_exact_and_moves(tmp_path):
    from helpers import compose_train

    from eqflow import pipeline

    cfg = compose_train(["flow=exact_lowrank", "logger=none", "data.n_samples=2000"], tmp_path)
    metrics = pipeline.train(cfg).metrics
    assert metrics["residual/relative"] < 1e-10  # measured in float64
    assert metrics["residual/rms_v_dot_s"] > 0.05  # not a flow at rest
    assert metrics["lyapunov/mean_speed"] > 0.1


@pytest.mark.slow
def test_a_lowrank_ensemble_member_is_the_single_run_of_its_seed(tmp_path):
    from helpers import compose_train
    from test_exact import TINY_LORENZ

    from eqflow import pipeline
    from eqflow.models import LowRankExactFlow
    from eqflow.runs import load_run

    def train(overrides, out):
        cfg = compose_train(
            [*TINY_LORENZ, "flow=exact_lowrank", "flow.model.hidden=[16]", *overrides], tmp_path
        )
        cfg.paths.output_dir = str(tmp_path / out)
        return pipeline.train(cfg)

    ens = train(["seed=3", "flow.ensemble=2"], "ens")
    single = train(["seed=4"], "single")
    run = load_run(ens.output_dir / "seed4")
    assert isinstance(run.flow, LowRankExactFlow)
    for key, value in single.flow.state_dict().items():
        assert torch.allclose(run.flow.state_dict()[key], value, rtol=1e-4, atol=1e-5), key
    assert run.metrics["mmd/final"] == pytest.approx(
        single.metrics["mmd/final"], rel=1e-3, abs=1e-6
    )
    assert run.metrics["residual/relative"] < 1e-10


def test_lorenz96_against_a_hand_computed_step():
    from eqflow.data import Lorenz96

    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0]])
    # dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + 8, indices cyclic:
    # i=0: (2 - 4) 5 - 1 + 8 = -3; i=1: (3 - 5) 1 - 2 + 8 = 4; i=2: (4 - 1) 2 - 3 + 8 = 11;
    # i=3: (5 - 2) 3 - 4 + 8 = 13; i=4: (1 - 3) 4 - 5 + 8 = -5
    assert torch.equal(Lorenz96(8.0)(x), torch.tensor([[-3.0, 4.0, 11.0, 13.0, -5.0]]))
    with pytest.raises(ValueError, match="data.dim >= 4"):
        Lorenz96()(torch.zeros(1, 3))
