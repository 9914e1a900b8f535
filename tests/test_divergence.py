from unittest import mock

import pytest
import torch
from torch.func import jvp

from eqflow.dynamics import divergence, divergence_estimates, hutchinson_variance, jacobian
from eqflow.models import EquilibriumFlowModule
from eqflow.nets import FlowMLP, NonAffineBatchNorm


def autograd_trace(f, x):
    return torch.stack(
        [torch.autograd.functional.jacobian(lambda y: f(y[None])[0], xi).trace() for xi in x]
    )


@pytest.mark.parametrize("dim", [2, 3, 5])
def test_exact_divergence_matches_autograd_jacobian_trace(dim):
    torch.manual_seed(dim)
    net = FlowMLP(dim).double()
    x = torch.randn(16, dim, dtype=torch.float64)
    torch.testing.assert_close(divergence(net.pre_norm, x), autograd_trace(net.pre_norm, x))


def test_exact_divergence_of_linear_field_is_trace():
    a = torch.randn(4, 4, dtype=torch.float64)
    x = torch.randn(7, 4, dtype=torch.float64)
    torch.testing.assert_close(divergence(lambda y: y @ a.T, x), a.trace().expand(7))


@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_mean_matches_exact(probe):
    torch.manual_seed(0)
    net = FlowMLP(3).double()
    x = torch.randn(8, 3, dtype=torch.float64)
    exact = divergence(net.pre_norm, x)
    g = torch.Generator().manual_seed(1)
    _, est = divergence_estimates(
        net.pre_norm, x, "hutchinson", n_probes=20000, probe=probe, generator=g
    )
    stderr = est.std(0) / est.shape[0] ** 0.5
    assert ((est.mean(0) - exact).abs() < 5 * stderr + 1e-12).all()
    # a single estimate is noisy, the mean is not: the test would catch a biased estimator
    assert est.std(0).max() > 10 * stderr.max()


def test_divergence_gradients_reach_parameters():
    net = FlowMLP(3)
    x = torch.randn(32, 3)
    divergence(net.pre_norm, x).pow(2).mean().backward()
    weights = [p for name, p in net.net.named_parameters() if name.endswith("weight")]
    assert all(w.grad is not None and w.grad.abs().sum() > 0 for w in weights)
    # the output bias shifts v by a constant and cannot change its divergence
    bias_grad = net.net[-1].bias.grad
    assert bias_grad is None or bias_grad.abs().max() == 0


def test_unknown_divergence_method_is_named():
    with pytest.raises(ValueError, match="exact.*hutchinson"):
        divergence(lambda y: y, torch.zeros(2, 2), method="trace")


def test_batch_norm_under_jvp_matches_finite_differences():
    bn = NonAffineBatchNorm(3).double()
    h = torch.randn(64, 3, dtype=torch.float64)
    t = torch.randn(64, 3, dtype=torch.float64)
    before = (bn.running_mean.clone(), bn.running_var.clone())
    out, tangent = jvp(bn, (h,), (t,))
    eps = 1e-6
    fd = (bn(h + eps * t) - bn(h - eps * t)) / (2 * eps)
    torch.testing.assert_close(tangent, fd, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out, (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + bn.eps))
    # the forward pass never touches the buffers; updates are explicit
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    bn.update_running_stats(h)
    assert not torch.equal(bn.running_mean, before[0])


def test_batch_norm_output_is_zero_mean_unit_scale_and_eval_uses_running_stats():
    bn = NonAffineBatchNorm(2)
    h = 3 + 2 * torch.randn(500, 2)
    out = bn(h)
    torch.testing.assert_close(out.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(0, unbiased=False), torch.ones(2), atol=1e-4, rtol=0)
    bn.set_running_stats(h)
    bn.eval()
    single = bn(h[:1])  # one sample works in eval mode (no batch statistics)
    torch.testing.assert_close(single, (h[:1] - h.mean(0)) / torch.sqrt(h.var(0) + bn.eps))


@pytest.mark.parametrize("dim", [2, 3])
def test_jacobian_matches_autograd(dim):
    torch.manual_seed(dim)
    net = FlowMLP(dim).double()
    x = torch.randn(5, dim, dtype=torch.float64)
    fx, jac = jacobian(net.pre_norm, x)
    torch.testing.assert_close(fx, net.pre_norm(x))
    for b in range(5):
        dense = torch.autograd.functional.jacobian(lambda y: net.pre_norm(y[None])[0], x[b])
        torch.testing.assert_close(jac[b], dense)


@pytest.mark.slow
@pytest.mark.parametrize("probe", ["gaussian", "rademacher"])
def test_hutchinson_variance_matches_the_spread_of_the_estimates(probe):
    torch.manual_seed(0)
    net = FlowMLP(3).double()
    x = torch.randn(6, 3, dtype=torch.float64)
    _, jac = jacobian(net.pre_norm, x)
    g = torch.Generator().manual_seed(2)
    _, est = divergence_estimates(
        net.pre_norm, x, "hutchinson", n_probes=40000, probe=probe, generator=g
    )
    predicted = hutchinson_variance(jac, probe)
    # the sample variance of 40 000 draws is within a few per cent of the true one
    torch.testing.assert_close(est.var(0), predicted, rtol=0.06, atol=1e-10)
    assert not torch.allclose(
        hutchinson_variance(jac, "gaussian"), hutchinson_variance(jac, "rademacher")
    )


@pytest.mark.slow
def test_expected_flow_loss_is_the_mean_of_the_squared_hutchinson_loss():
    torch.manual_seed(0)
    kw = dict(dim=3, divergence="hutchinson", n_probes=4)
    squared = EquilibriumFlowModule(torch.nn.Linear(3, 3), estimator="squared", **kw).double()
    expected = EquilibriumFlowModule(torch.nn.Linear(3, 3), estimator="expected", **kw).double()
    expected.net.load_state_dict(squared.net.state_dict())
    squared.eval(), expected.eval()
    x = torch.randn(64, 3, dtype=torch.float64)
    s = -x  # the score of N(0, I)
    draws = torch.stack([squared.continuity_loss(x, s)["loss"] for _ in range(3000)])
    closed_form = expected.continuity_loss(x, s)["loss"]
    assert (draws.mean() - closed_form).abs() < 4 * draws.std() / len(draws) ** 0.5
    assert draws.std() > 0.05 * closed_form  # the sampled loss is noisy; the closed form is not


def test_expected_estimator_needs_hutchinson():
    with pytest.raises(ValueError, match="expected.*hutchinson"):
        EquilibriumFlowModule(
            torch.nn.Linear(3, 3), dim=3, divergence="exact", estimator="expected"
        )


def _relaxing(value: bool):
    return mock.patch.object(
        EquilibriumFlowModule, "relaxing", new_callable=mock.PropertyMock, return_value=value
    )


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["squared", "expected"])
def test_relaxation_stage_trains_on_the_exact_residual_with_a_scaled_penalty(estimator):
    torch.manual_seed(0)
    kw = dict(dim=3, divergence="hutchinson", n_probes=4, estimator=estimator, relax_epochs=1)
    relaxed = EquilibriumFlowModule(torch.nn.Linear(3, 3), **kw).double().train()
    penalised = EquilibriumFlowModule(torch.nn.Linear(3, 3), **{**kw, "relax_penalty": 0.5})
    exact = EquilibriumFlowModule(torch.nn.Linear(3, 3), dim=3, divergence="exact")
    for other in (penalised, exact):
        other.double().train().net.load_state_dict(relaxed.net.state_dict())
    x = torch.randn(64, 3, dtype=torch.float64)
    s = -x  # the score of N(0, I)
    with _relaxing(True):
        relaxed_loss = relaxed.continuity_loss(x, s)["loss"]
        half_penalty = penalised.continuity_loss(x, s)["loss"]
    exact_loss = exact.continuity_loss(x, s)["loss"]
    torch.testing.assert_close(relaxed_loss, exact_loss)  # relax_penalty=0: no probe, no penalty
    mean, std = relaxed.net.norm.stats(relaxed.net.pre_norm(x))  # batch statistics, held fixed
    _, jac = jacobian(lambda y: (relaxed.net.pre_norm(y) - mean) / std, x)
    penalty = (hutchinson_variance(jac, "gaussian") / 4).mean()
    torch.testing.assert_close(half_penalty, exact_loss + 0.5 * penalty)
    with _relaxing(False):  # before the stage: the configured Hutchinson loss, penalty included
        before = torch.stack([relaxed.continuity_loss(x, s)["loss"] for _ in range(400)]).mean()
    assert before > exact_loss + 0.5 * penalty


def test_anchored_relaxation_adds_the_distance_to_the_field_frozen_at_the_stage_start():
    torch.manual_seed(1)
    kw = dict(dim=3, divergence="hutchinson", estimator="expected", relax_epochs=1)
    free = EquilibriumFlowModule(torch.nn.Linear(3, 3), **kw).double().train()
    anchored = EquilibriumFlowModule(torch.nn.Linear(3, 3), **kw, relax_anchor=2.0).double().train()
    anchored.net.load_state_dict(free.net.state_dict())
    x = torch.randn(64, 3, dtype=torch.float64)
    s = -x
    with _relaxing(True):
        anchored.start_relaxation()  # v_0 := v
        frozen = {k: v.clone() for k, v in anchored.anchor.state_dict().items()}
        for p in anchored.net.parameters():  # the field moves on; the anchor must not
            p.data.add_(0.1 * torch.randn_like(p))
        free.net.load_state_dict(anchored.net.state_dict())
        anchored.start_relaxation()  # a second call (a resumed stage) keeps the first snapshot
        for key, value in anchored.anchor.state_dict().items():
            torch.testing.assert_close(value, frozen[key])
        loss = anchored.continuity_loss(x, s)["loss"]
        exact = free.continuity_loss(x, s)["loss"]
    mean, std = anchored.net.norm.stats(anchored.net.pre_norm(x))
    v = (anchored.net.pre_norm(x) - mean) / std
    norm = anchored.anchor.norm
    v_0 = (anchored.anchor.pre_norm(x) - norm.running_mean) / torch.sqrt(
        norm.running_var + norm.eps
    )
    distance = ((v - v_0) ** 2).sum(-1).mean()
    assert distance > 1e-3
    torch.testing.assert_close(loss, exact + 2.0 * distance)
    assert not any(p.requires_grad for p in anchored.anchor.parameters())


def test_a_checkpoint_without_an_anchor_loads_into_an_anchored_flow_and_back():
    plain = EquilibriumFlowModule(torch.nn.Linear(3, 3), dim=3, relax_epochs=1)
    anchored = EquilibriumFlowModule(torch.nn.Linear(3, 3), dim=3, relax_epochs=1, relax_anchor=1.0)
    checkpoint = {"state_dict": plain.state_dict()}
    anchored.on_load_checkpoint(checkpoint)
    anchored.load_state_dict(checkpoint["state_dict"])  # strict: every key present
    assert not bool(anchored.anchor_set)  # the stage will still take its snapshot
    torch.testing.assert_close(anchored.anchor.net[0].weight, plain.net.net[0].weight)
    checkpoint = {"state_dict": anchored.state_dict()}
    plain.on_load_checkpoint(checkpoint)
    plain.load_state_dict(checkpoint["state_dict"])


def test_relaxation_settings_are_checked():
    with pytest.raises(ValueError, match="relax_lr.*lr_schedule=cosine"):
        EquilibriumFlowModule(
            torch.nn.Linear(3, 3), dim=3, lr_schedule="cosine", relax_epochs=2, relax_lr=1e-3
        )
    with pytest.raises(ValueError, match="relax_epochs=-1"):
        EquilibriumFlowModule(torch.nn.Linear(3, 3), dim=3, relax_epochs=-1)
    with pytest.raises(ValueError, match="relax_anchor=-0.5"):
        EquilibriumFlowModule(torch.nn.Linear(3, 3), dim=3, relax_anchor=-0.5)
    with pytest.raises(ValueError, match="relax_anchor=0.1 anchors.*relax_epochs > 0"):
        EquilibriumFlowModule(torch.nn.Linear(3, 3), dim=3, relax_anchor=0.1)
