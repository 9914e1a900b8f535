"""Advection written as an exact flow, v = div A + A(x) s with A(x) the skew operator of local
advection (eqflow.dynamics.transport): exact for any velocity blind at its pixels, and the
central difference of advection in its div A."""

import pytest
import torch
from helpers import equilibrium_residual, quartic_score

from eqflow.dynamics.transport import exact_advection

C, H, W = 2, 7, 8


def _quartic_score(dtype):
    return quartic_score((C, H, W), dtype)


def _heading(dtype, blind=True):
    """A nonlinear velocity field: tanh of a random 5 x 5 correlation of both channels, masked
    at each component's pixel and its two axis neighbours (``blind=False`` fills them in)."""
    g = torch.Generator().manual_seed(4)
    kernels = torch.randn(2, C, 5, 5, generator=g, dtype=dtype)
    if blind:
        for k, (my, mx) in enumerate(((0, 1), (1, 0))):
            for step in (-1, 0, 1):
                kernels[k, :, 2 + step * my, 2 + step * mx] = 0
    return lambda x: torch.tanh(
        torch.nn.functional.conv2d(torch.nn.functional.pad(x, (2,) * 4, mode="circular"), kernels)
    )


def _relative_residual(field, score, dtype):
    """rms(div v + v.s) / rms(|v| |s|) at 6 random images (:func:`equilibrium_residual`)."""
    x = torch.randn(6, C, H, W, dtype=dtype, generator=torch.Generator().manual_seed(2))
    return equilibrium_residual(field, score, x)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_div_p_v_vanishes_against_autograd(dtype, tol):
    score, heading = _quartic_score(dtype), _heading(dtype)
    for level in (0.0, 0.8):  # the stirring's level leaves div A as it is
        field = lambda x: exact_advection(x, score(x), heading(x), level)  # noqa: E731
        assert _relative_residual(field, score, dtype) < tol


def test_a_heading_that_sees_its_pixels_breaks_the_equilibrium():
    dtype = torch.float64
    score, heading = _quartic_score(dtype), _heading(dtype, blind=False)
    field = lambda x: exact_advection(x, score(x), heading(x))  # noqa: E731
    assert _relative_residual(field, score, dtype) > 1e-4


def test_advection_alone_is_not_exact():
    """The control: div A without the A s that exactness costs leaks."""
    dtype = torch.float64
    score, heading = _quartic_score(dtype), _heading(dtype)
    field = lambda x: exact_advection(x, torch.zeros_like(x), heading(x))  # noqa: E731
    assert _relative_residual(field, score, dtype) > 1e-3


def test_the_score_part_is_skew_and_a_uniform_heading_is_central_difference_advection():
    x = torch.randn(1, C, H, W, dtype=torch.float64)
    u = torch.tensor([0.7, -0.3], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, H, W)
    advection = exact_advection(x, torch.zeros_like(x), u)
    by_hand = (
        -0.7 * (x.roll(-1, -1) - x.roll(1, -1)) / 2 + 0.3 * (x.roll(-1, -2) - x.roll(1, -2)) / 2
    )
    assert torch.allclose(advection, by_hand, atol=1e-14)
    basis = torch.eye(C * H * W, dtype=torch.float64).view(-1, C, H, W)
    dense = torch.stack(
        [(exact_advection(x, e[None], u) - advection)[0].flatten() for e in basis], 1
    )
    assert (dense + dense.T).abs().max() < 1e-13 and dense.abs().max() > 0.1


def _script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "creature_transport.py"
    spec = importlib.util.spec_from_file_location("creature_transport", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_a_uniform_shift_carries_a_lone_icon_as_far_as_it_says():
    """The transport script's lone icon, centred, and advection at u moving its centroid u t."""
    script = _script()
    icon = torch.zeros(8, 8, 4)
    icon[2:6, 1:7, 3] = 1.0  # an opaque black 4 x 6 bar
    canvas = script.lone_icon(icon.numpy())
    assert canvas.shape == (1, 3, 32, 32)
    mass = (canvas - 1).pow(2).sum(1)[0]
    assert torch.allclose(script.centroid(mass), torch.tensor([15.5, 15.5]))
    turned = (script.lone_icon(icon.numpy(), turns=1) - 1).pow(2).sum(1)[0]
    assert turned.nonzero()[:, 0].unique().numel() == 6  # the bar now stands upright
    u = torch.zeros(1, 2, 32, 32)
    u[:, 0] = 2.0  # 2 px per unit time along x
    x, dt = canvas.clone(), 0.05
    for _ in range(30):  # 1.5 time units of Heun: 3 px
        k1 = exact_advection(x, torch.zeros_like(x), u)
        k2 = exact_advection(x + dt * k1, torch.zeros_like(x), u)
        x = x + dt * (k1 + k2) / 2
    # central differences move the first moment of the contrast at exactly u (summation by
    # parts); the sharp edges' ripples lag, so a squared contrast's centroid trails a little
    moved = script.centroid((1 - x).sum(1)[0]) - script.centroid((1 - canvas).sum(1)[0])
    assert moved[0].abs() < 1e-4 and moved[1] == pytest.approx(3.0, abs=1e-3)
