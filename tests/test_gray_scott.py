import pytest
import torch

from eqflow.data.gray_scott import GrayScott, initial_state, laplacian
from eqflow.dynamics.skew import circular_conv, gamma_kernel, skew_kernel, skew_part


def test_one_simulator_step_matches_hand_computation():
    gs = GrayScott.preset("waves")
    g = torch.Generator().manual_seed(0)
    state = torch.rand(1, 2, 5, 5, generator=g, dtype=torch.float64)
    nxt = gs.step(state)
    i, j = 2, 4  # a cell on the right edge: its right neighbour wraps to column 0
    u, v = state[0, 0], state[0, 1]
    lap = lambda a: a[i - 1, j] + a[i + 1, j] + a[i, j - 1] + a[i, 0] - 4 * a[i, j]  # noqa: E731
    uvv = u[i, j] * v[i, j] ** 2
    u_new = u[i, j] + 0.16 * lap(u) - uvv + 0.018 * (1 - u[i, j])
    v_new = v[i, j] + 0.08 * lap(v) + uvv - (0.018 + 0.049) * v[i, j]
    assert nxt[0, 0, i, j].item() == pytest.approx(min(max(u_new.item(), 0), 1))
    assert nxt[0, 1, i, j].item() == pytest.approx(min(max(v_new.item(), 0), 1))
    assert nxt.min() >= 0 and nxt.max() <= 1


def test_laplacian_of_a_constant_is_zero_and_sums_to_zero():
    x = torch.randn(2, 7, 9, dtype=torch.float64)
    assert laplacian(torch.ones(3, 4)).abs().max() == 0
    assert laplacian(x).sum().abs() < 1e-10  # periodic: no flux through the edges


def test_initial_state_discs_and_seed():
    a = initial_state(2, 32, torch.Generator().manual_seed(1))
    b = initial_state(2, 32, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    disc = a[:, 0] == 0.5
    assert disc.any() and torch.equal(disc, a[:, 1] == 0.25)
    assert ((a[:, 0] == 1) | disc).all()
    with pytest.raises(ValueError, match="preset"):
        GrayScott.preset("zebra")


def _dense(kernel, c, h, w):
    """The operator of circular_conv as a dense (c h w) x (c h w) matrix."""
    eye = torch.eye(c * h * w, dtype=torch.float64).reshape(-1, c, h, w)
    return circular_conv(eye, kernel.double()).reshape(c * h * w, -1).T


@pytest.mark.parametrize("channels,radius", [(1, 1), (2, 0), (2, 1), (3, 2)])
def test_skew_kernel_is_a_skew_operator(channels, radius):
    k = skew_kernel(channels, radius, torch.Generator().manual_seed(radius), torch.float64)
    d = _dense(k, channels, 6, 7)
    torch.testing.assert_close(d.T, -d)
    assert k.norm().item() == pytest.approx(1.0)
    # a random, not skew, kernel is not: the check can fail
    p = torch.randn(channels, channels, 2 * radius + 1, 2 * radius + 1, dtype=torch.float64)
    dp = _dense(p, channels, 6, 7)
    assert (dp.T + dp).abs().max() > 1e-3


def test_gamma_kernel_and_orthogonality_to_any_field():
    k = gamma_kernel(-1.0, torch.float64)
    torch.testing.assert_close(
        k.reshape(2, 2), torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64) / 2**0.5
    )
    s = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    v = circular_conv(s, skew_kernel(2, 1, torch.Generator().manual_seed(0), torch.float64))
    assert (v * s).sum((1, 2, 3)).abs().max() < 1e-10  # v . s = 0 per sample
    with pytest.raises(ValueError, match="odd"):
        skew_part(torch.randn(2, 2, 2, 2))


def test_gray_scott_system_data_and_true_field():
    from eqflow.data.gray_scott import GrayScottSystem

    system = GrayScottSystem("spirals", size=16, n_samples=3, steps=20, chunk=2, progress=False)
    snaps = system.generate(torch.Generator().manual_seed(0))
    again = system.generate(torch.Generator().manual_seed(0))
    assert snaps.x.shape == (3, 2, 16, 16) and torch.equal(snaps.x, again.x)
    assert snaps.x.min() >= -1 and snaps.x.max() <= 1
    field = system.true_field(snaps)
    z = snaps.x.double()
    # one Euler step in raw coordinates, seen in the stored coordinates (x = 2 s - 1)
    raw = (z + 1) / 2
    torch.testing.assert_close(field(z), 2 * system.field(raw))
    with pytest.raises(ValueError, match="feed and data.kill"):
        GrayScottSystem(feed=0.01)
