"""The image rung of exact flows: v = A(x) s with a local skew operator whose coefficient for
a pixel pair is blind to both pixels (flow=exact_local)."""

import pytest
import torch
from helpers import equilibrium_residual, quartic_score

from eqflow.models.exact_local import (
    LocalExactFlow,
    content_motion,
    local_skew_apply,
    probe_pair_strain,
)
from eqflow.models.score import Score
from eqflow.nets.blind_pairs import BlindPairNet, half_stencil
from eqflow.protocols.langevin import flow_content_share

C, H, W = 2, 6, 7


def _net(dtype=torch.float32, reach=1, radius=2):
    torch.manual_seed(0)
    net = BlindPairNet(C, reach=reach, radius=radius, hidden=(8, 8)).to(dtype)
    with torch.no_grad():  # the last layer starts at zero bias; give the test a generic one
        net.layers[-1].bias.normal_()
    return net


def _quartic_score(dtype):
    return quartic_score((C, H, W), dtype)


def _field(net, score):
    return lambda x: local_skew_apply(net(x), score(x), net.offsets)


def test_the_half_stencil_holds_one_offset_of_each_pair():
    offsets = half_stencil(1)
    assert offsets[0] == (0, 0) and len(offsets) == 5
    assert not any((-dy, -dx) in offsets for dy, dx in offsets[1:])


def test_each_coefficient_is_blind_to_its_pair():
    net = _net(torch.float64)
    x = torch.randn(1, C, H, W, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: net(z)[0], x)[:, :, :, :, :, 0]
    # jac: (K, C, C, H, W) output x (C, H, W) input
    for k, (dy, dx) in enumerate(net.offsets):
        for p in [(0, 0), (2, 3), (5, 6)]:
            q = ((p[0] + dy) % H, (p[1] + dx) % W)
            at_p = jac[k, :, :, p[0], p[1]]
            assert at_p[..., :, p[0], p[1]].abs().max() == 0
            assert at_p[..., :, q[0], q[1]].abs().max() == 0
            assert at_p.abs().max() > 0  # it does see the rest of its window


def test_the_operator_is_skew():
    net = _net(torch.float64)
    x = torch.randn(1, C, H, W, dtype=torch.float64)
    coef = net(x)
    basis = torch.eye(C * H * W, dtype=torch.float64).view(-1, C, H, W)
    dense = torch.stack(
        [local_skew_apply(coef, e[None], net.offsets)[0].flatten() for e in basis], 1
    )
    assert (dense + dense.T).abs().max() < 1e-12
    assert dense.abs().max() > 0.1


def _relative_residual(net, score, dtype):
    """rms(div v + v.s) / rms(|v| |s|) at 8 random images (:func:`equilibrium_residual`)."""
    x = torch.randn(8, C, H, W, dtype=dtype, generator=torch.Generator().manual_seed(2))
    return equilibrium_residual(_field(net, score), score, x)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-14), (torch.float32, 1e-6)])
def test_div_p_v_vanishes_against_autograd(dtype, tol):
    relative = _relative_residual(_net(dtype), _quartic_score(dtype), dtype)
    assert relative < tol, relative


def test_a_coefficient_that_sees_its_pair_breaks_the_equilibrium():
    """The control: the same operator with the blind spots filled in is skew but not exact."""
    net = _net(torch.float64)
    net.mask.fill_(1.0)
    assert _relative_residual(net, _quartic_score(torch.float64), torch.float64) > 1e-5


def _exact_strain(field, x):
    """||sym dv||_F^2 per image, from autograd's full Jacobian."""
    d = x[0].numel()
    exact = []
    for xi in x:
        j = torch.autograd.functional.jacobian(lambda z: field(z[None])[0], xi).reshape(d, d)
        exact.append((0.5 * (j + j.T)).pow(2).sum())
    return torch.stack(exact)


def _strain_draws(net, score, x, n, shift):
    """``n`` probe-pair estimates of ||sym dv||^2 per image (n, B)."""
    g = torch.Generator().manual_seed(3)

    def raw(y, t):
        return local_skew_apply(net(y), t, net.offsets)

    draws = []
    for _ in range(n):
        r, q = (torch.randn(x.shape, generator=g, dtype=x.dtype) for _ in range(2))
        draws.append(probe_pair_strain(raw, score, x, r, q, shift)[2].detach())
    return torch.stack(draws)


@pytest.mark.slow
def test_the_strain_estimate_matches_the_exact_strain_in_expectation():
    dtype = torch.float64
    net, score = _net(dtype), _quartic_score(dtype)
    x = torch.randn(2, C, H, W, dtype=dtype, generator=torch.Generator().manual_seed(4))
    exact = _exact_strain(_field(net, score), x)
    draws = _strain_draws(net, score, x, 600, 0.0)
    mean, se = draws.mean(0), draws.std(0) / len(draws) ** 0.5
    assert ((mean - exact).abs() < 5 * se).all(), (mean, exact, se)


def test_the_skew_shift_keeps_the_strain_and_cuts_the_probes_spread():
    """A score at a small noise level, J_s = -c I + a small rest: dv + c A has the strain of dv
    (A skew) and is far smaller, so the probes' estimates agree with the exact strain and
    spread much less than without the shift."""
    dtype, c = torch.float64, 20.0
    net, quartic = _net(dtype), _quartic_score(dtype)

    def score(y):
        return -c * y + quartic(y)

    x = torch.randn(2, C, H, W, dtype=dtype, generator=torch.Generator().manual_seed(4))
    exact = _exact_strain(_field(net, score), x)
    shifted, raw = _strain_draws(net, score, x, 100, c), _strain_draws(net, score, x, 100, 0.0)
    mean, se = shifted.mean(0), shifted.std(0) / len(shifted) ** 0.5
    assert ((mean - exact).abs() < 5 * se).all(), (mean, exact, se)
    assert (shifted.std(0) < 0.3 * raw.std(0)).all(), (shifted.std(0), raw.std(0))


def test_content_motion_is_the_clean_images_speed_for_gaussian_data():
    """Data N(0, w I) noised to level a: s = -x / (a w + 1 - a), so Tweedie's clean image moves
    at sqrt(a) w / (a w + 1 - a) times v; a single clean image (w = 0) never moves."""
    a = 0.9
    x = torch.randn(3, C, H, W, dtype=torch.float64)
    v = torch.randn(3, C, H, W, dtype=torch.float64, requires_grad=True)
    for w in (0.0, 0.5, 2.0):
        variance = a * w + 1 - a

        def score(y, variance=variance):
            return -y / variance

        moved = content_motion(score, x, v, a)
        assert torch.allclose(moved, a**0.5 * w / variance * v, atol=1e-12)
    moved.pow(2).sum().backward()  # differentiable in v, for the flow's weights
    assert v.grad is not None and v.grad.abs().max() > 0


class _GaussianScore(Score, torch.nn.Module):
    """Data N(0, w I) read at the level a: s = -x / (a w + 1 - a)."""

    def __init__(self, a: float, w: float):
        torch.nn.Module.__init__(self)
        self.alpha, self.variance = torch.tensor(a), a * w + 1 - a

    def score(self, x):
        return -x / self.variance


class _BentScore(_GaussianScore):
    """A score whose Jacobian changes with x: the content share differs from image to image."""

    def score(self, x):
        return -x / self.variance - 0.3 * x**3


def test_the_content_strain_reads_how_much_of_the_field_moves_the_clean_image():
    a, w = 0.9, 0.5
    flow = LocalExactFlow(_GaussianScore(a, w), C, hidden=(8,), strain_per="content")
    x = torch.randn(4, C, H, W)
    parts = flow.strain(x, generator=torch.Generator().manual_seed(0))
    expected = a * w**2 / (a * w + 1 - a) ** 2  # |dx0_hat|^2 / |v|^2 for this Gaussian
    assert float(parts["content_share"]) == pytest.approx(expected, rel=1e-4)
    field = LocalExactFlow(_GaussianScore(a, w), C, hidden=(8,)).strain(x)
    assert "content_share" not in field
    with pytest.raises(ValueError, match="strain_per"):
        LocalExactFlow(_GaussianScore(a, w), C, strain_per="pixels")
    # the runs' metric reads the same share from the flow's own field
    images = torch.randn(8, C, H, W, generator=torch.Generator().manual_seed(1))
    assert flow_content_share(flow, images) == pytest.approx(expected, rel=1e-4)
    # a few images at a time (memory) gives the share of the whole set, not of the last chunk
    bent = LocalExactFlow(_BentScore(a, w), C, hidden=(8,))
    images[:3] *= 3.0  # images whose share differs from the rest's
    whole = flow_content_share(bent, images, chunk=len(images))
    assert flow_content_share(bent, images, chunk=3) == pytest.approx(whole, rel=1e-5)
    assert flow_content_share(bent, images[6:], chunk=2) != pytest.approx(whole, rel=1e-2)


@pytest.mark.slow
def test_a_tiny_alife_run_trains_the_exact_local_flow_and_tracks_its_creatures(tmp_path):
    from helpers import compose_train

    from eqflow import pipeline

    cfg = compose_train(
        [
            "experiment=alife",
            "flow=exact_local",
            "icon=dot",
            "logger=none",
            "data.canvas=16",
            "data.icon_size=8",
            "data.n_samples=16",
            "score.epochs=1",
            "score.batch_size=8",
            "flow.batch_size=8",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "measure.creatures.steps=20",
            "measure.creatures.scale=2",
            "measure.creatures.calibration=clean",
            "measure.creatures.whole_reference_images=8",
            "measure.creatures.frame_every=5",
        ],
        tmp_path,
        tiny=False,
    )
    result = pipeline.train(cfg)
    m = result.metrics
    assert type(result.flow).__name__ == "LocalExactFlow"
    assert m["creatures/whole_travel_bodies"] >= 0
    assert 0 < m["creatures/flow_content_share"] < 10
    # the SDE took the Heun substeps that keep it within 1 % of its own damping
    assert m["creatures/heun_substeps"] >= 1
    assert 1 - 0.05 < m["creatures/heun_excess"] <= 1.01
    assert (result.output_dir / "figures" / "creatures_travel.png").exists()
    # the scale set from noised images: rms |v| = speed x rms |s| on them
    flow = result.flow
    x0 = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    flow.calibrate(x0)
    with torch.no_grad():
        x = flow.score_model.noise(x0)
        ratio = flow.velocity(x).norm() / flow.score(x).norm()
    assert float(ratio) == pytest.approx(cfg.flow.model.speed, rel=0.1)
