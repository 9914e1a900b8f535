import pytest
import torch

from eqflow.dynamics import divergence, integrate_ode, sde_heun, skew_matrix
from eqflow.metrics import mmd2, mmd_over_time


def test_skew_matrix_is_skew_and_unit_frobenius():
    g = torch.Generator().manual_seed(0)
    for d in (2, 3, 7):
        m = skew_matrix(d, g, dtype=torch.float64)
        torch.testing.assert_close(m.T, -m)
        assert abs(m.norm().item() - 1) < 1e-12
    a = skew_matrix(3, torch.Generator().manual_seed(5))
    b = skew_matrix(3, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_training_free_flow_satisfies_stationary_continuity_equation(mixture):
    d_mat = skew_matrix(2, torch.Generator().manual_seed(1), dtype=torch.float64)
    v = lambda x: mixture.score(x) @ d_mat.T  # noqa: E731
    x = mixture.sample(200, torch.Generator().manual_seed(2))
    residual = divergence(v, x) + (v(x) * mixture.score(x)).sum(-1)
    assert residual.abs().max() < 1e-10
    # a non-skew matrix breaks it: the check is not vacuous
    m = d_mat + 0.3 * torch.eye(2, dtype=torch.float64)
    w = lambda x: mixture.score(x) @ m.T  # noqa: E731
    assert (divergence(w, x) + (w(x) * mixture.score(x)).sum(-1)).abs().max() > 0.1


def _start_and_floor(mixture, g):
    """400 mixture samples and the |MMD^2| between them and 400 fresh ones (the noise floor)."""
    start = mixture.sample(400, g)
    return start, abs(float(mmd2(start, mixture.sample(400, g), 0.5)))


@pytest.mark.slow
def test_training_free_flow_preserves_gaussian_mixture(mixture):
    g = torch.Generator().manual_seed(0)
    d_mat = skew_matrix(2, g, dtype=torch.float64)
    start, floor = _start_and_floor(mixture, g)
    traj = integrate_ode(lambda x: mixture.score(x) @ d_mat.T, start, 0.05, 200)
    moved = (traj[-1] - traj[0]).norm(dim=1).mean()
    assert moved > 0.3  # the points really move
    assert mmd_over_time(traj, 0.5).abs().max() < 3 * floor + 2e-3
    # the pure score flow (a gradient flow) collapses the points onto the modes
    score_traj = integrate_ode(mixture.score, start, 0.05, 200)
    assert mmd2(start, score_traj[-1], 0.5) > 10 * (3 * floor + 2e-3)


def test_irreversible_langevin_sde_keeps_the_mixture(mixture):
    g = torch.Generator().manual_seed(3)
    d_mat = skew_matrix(2, g, dtype=torch.float64)
    start, floor = _start_and_floor(mixture, g)
    end = sde_heun(
        lambda x: mixture.score(x) @ d_mat.T, mixture.score, start, 0.01, 300, 0.1, generator=g
    )
    assert abs(float(mmd2(start, end, 0.5))) < 3 * floor + 2e-3


def test_heun_step_matches_hand_computation():
    a = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    drift = lambda x: x @ a.T  # noqa: E731
    score = lambda x: -x  # noqa: E731
    x0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    g = torch.Generator().manual_seed(7)
    out = sde_heun(drift, score, x0, 0.1, 1, 0.5, generator=g)
    e = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    acc = lambda x: drift(x) + 0.5 * score(x)  # noqa: E731
    x_hat = x0 + acc(x0) * 0.1 + (2 * 0.5 * 0.1) ** 0.5 * e
    expected = x0 + 0.5 * (acc(x0) + acc(x_hat)) * 0.1 + (2 * 0.5 * 0.1) ** 0.5 * e
    torch.testing.assert_close(out, expected)
