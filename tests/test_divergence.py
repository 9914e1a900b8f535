import pytest
import torch
from torch.func import jvp

from eqflow.dynamics import divergence, divergence_estimates
from eqflow.nets import FlowMLP, NonAffineBatchNorm


def autograd_trace(f, x):
    return torch.stack([torch.autograd.functional.jacobian(lambda y: f(y[None])[0], xi).trace()
                        for xi in x])


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
    _, est = divergence_estimates(net.pre_norm, x, "hutchinson", n_probes=20000, probe=probe,
                                  generator=g)
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
