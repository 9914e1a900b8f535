"""flow=transport: v = div A + A(x) s with A(x) the skew operator of local advection at a
heading read from the image, exact for any heading and a rigid translation where it is
uniform."""

import math

import pytest
import torch

from eqflow.models.transport import (
    background_colour,
    heading_kernels,
    periodic_correlation,
    strongest_dipole_contrast,
    transport_field,
)

C, H, W = 2, 7, 8


def _quartic_score(dtype):
    """s = -grad E for E = x.P x / 2 + sum x^4 / 4: a density with no translation symmetry."""
    g = torch.Generator().manual_seed(1)
    d = C * H * W
    m = torch.randn(d, d, generator=g, dtype=dtype) / d**0.5
    prec = m @ m.T + 0.5 * torch.eye(d, dtype=dtype)
    return lambda x: -((x.flatten(1) @ prec).view(x.shape) + x**3)


def _heading(dtype, blind=True):
    """A nonlinear heading: tanh of a random 5 x 5 correlation of both channels, masked as
    :func:`heading_kernels` masks (``blind=False`` fills the blind spots in)."""
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
    """rms(div v + v.s) / rms(|v| |s|) at 6 random images, div v by autograd's Jacobian."""
    x = torch.randn(6, C, H, W, dtype=dtype, generator=torch.Generator().manual_seed(2))
    d = C * H * W
    div = torch.stack(
        [
            torch.autograd.functional.jacobian(lambda z: field(z[None])[0], xi)
            .reshape(d, d)
            .trace()
            for xi in x
        ]
    )
    v, s = field(x), score(x)
    residual = div + (v * s).flatten(1).sum(-1)
    scale = (v.flatten(1).norm(dim=-1) * s.flatten(1).norm(dim=-1)).pow(2).mean().sqrt()
    return float(residual.pow(2).mean().sqrt() / scale)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_div_p_v_vanishes_against_autograd(dtype, tol):
    score, heading = _quartic_score(dtype), _heading(dtype)
    for level in (0.0, 0.8):  # the stirring's level leaves div A as it is
        field = lambda x: transport_field(x, score(x), heading(x), level)  # noqa: E731
        assert _relative_residual(field, score, dtype) < tol


def test_a_heading_that_sees_its_pixels_breaks_the_equilibrium():
    dtype = torch.float64
    score, heading = _quartic_score(dtype), _heading(dtype, blind=False)
    field = lambda x: transport_field(x, score(x), heading(x))  # noqa: E731
    assert _relative_residual(field, score, dtype) > 1e-4


def test_advection_alone_is_not_exact():
    """The control: div A without the A s that exactness costs leaks."""
    dtype = torch.float64
    score, heading = _quartic_score(dtype), _heading(dtype)
    field = lambda x: transport_field(x, torch.zeros_like(x), heading(x))  # noqa: E731
    assert _relative_residual(field, score, dtype) > 1e-3


def test_the_score_part_is_skew_and_a_uniform_heading_is_central_difference_advection():
    x = torch.randn(1, C, H, W, dtype=torch.float64)
    u = torch.tensor([0.7, -0.3], dtype=torch.float64).view(1, 2, 1, 1).expand(1, 2, H, W)
    advection = transport_field(x, torch.zeros_like(x), u)
    by_hand = (
        -0.7 * (x.roll(-1, -1) - x.roll(1, -1)) / 2 + 0.3 * (x.roll(-1, -2) - x.roll(1, -2)) / 2
    )
    assert torch.allclose(advection, by_hand, atol=1e-14)
    basis = torch.eye(C * H * W, dtype=torch.float64).view(-1, C, H, W)
    dense = torch.stack(
        [(transport_field(x, e[None], u) - advection)[0].flatten() for e in basis], 1
    )
    assert (dense + dense.T).abs().max() < 1e-13 and dense.abs().max() > 0.1


def _canvas_with(icon, at, size=32):
    """A white canvas (1 in [-1, 1]) with ``icon`` (3, h, w) pasted with its corner at ``at``."""
    canvas = torch.ones(1, 3, size, size)
    h, w = icon.shape[-2:]
    canvas[0, :, at[0] : at[0] + h, at[1] : at[1] + w] = icon
    return canvas


def _two_colour_icon():
    """A red head and a blue tail along x: an icon with a heading."""
    icon = -torch.ones(3, 4, 8)
    icon[0, :, 4:] = 1.0  # red where x is large: (1, -1, -1)
    icon[2, :, :4] = 1.0  # blue where x is small
    return icon


def test_the_heading_points_along_an_asymmetric_icon_and_turns_with_it():
    kernels = heading_kernels(3.0)[:2]
    icon = _two_colour_icon()
    images = torch.cat([_canvas_with(icon, (12, 12)), _canvas_with(icon.flip(-1), (12, 12))])
    w = strongest_dipole_contrast(images, kernels)
    u = periodic_correlation(torch.einsum("bchw,c->bhw", images, w)[:, None], kernels)
    at_icon = u[:, :, 12:16, 12:20].mean(dim=(-2, -1))  # (2 images, 2 components)
    assert at_icon[0, 0].abs() > 10 * at_icon[0, 1].abs()  # along the icon's axis
    assert torch.allclose(at_icon[1, 0], -at_icon[0, 0], rtol=1e-4)  # turned round: reversed
    turned = periodic_correlation(
        torch.einsum("bchw,c->bhw", images[:1].transpose(-1, -2), w)[:, None], kernels
    )[:, :, 12:20, 12:16].mean(dim=(-2, -1))
    assert torch.allclose(turned[0].flip(0), at_icon[0], rtol=1e-4, atol=1e-7)
    assert u[:, :, :, :4].abs().max() < 1e-3 * at_icon.abs().max()  # far away: no heading


def test_an_icon_in_one_colour_has_no_contrast_to_move_by():
    kernels = heading_kernels(2.0)[:2]
    icon = -torch.ones(3, 5, 5)
    icon[1] = 0.5  # one colour
    images = torch.cat([_canvas_with(icon, (4, 9)), _canvas_with(icon, (20, 3))])
    assert torch.allclose(background_colour(images), torch.ones(3))
    w = strongest_dipole_contrast(images, kernels)
    colour = icon[:, 0, 0] - 1.0
    assert abs(float(w @ colour)) < 1e-5 * float(colour.norm())
    assert math.isclose(float(w.norm()), 1.0, rel_tol=1e-6)


def test_the_heading_window_refuses_a_canvas_it_would_wrap_onto():
    with pytest.raises(ValueError, match="flow.model.spread"):
        periodic_correlation(torch.zeros(1, 1, 10, 10), heading_kernels(3.0))


def test_a_tiny_alife_run_moves_its_creatures_with_the_transport_flow(tmp_path):
    from helpers import compose_train

    from eqflow import pipeline

    cfg = compose_train(
        [
            "experiment=alife",
            "flow=transport",
            "flow.model.spread=2",
            "icon=firefly",
            "logger=none",
            "data.canvas=16",
            "data.icon_size=8",
            "data.n_samples=16",
            "score.epochs=1",
            "score.batch_size=8",
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
    m, flow = result.metrics, result.flow
    assert type(flow).__name__ == "HeadingTransportFlow"
    assert abs(float(flow.contrast.norm()) - 1) < 1e-5
    assert torch.allclose(flow.background, torch.ones(3))  # the scatters' white
    u = flow.heading(torch.randn(4, 3, 32, 32) * 2)
    assert 0 < u.abs().max() <= cfg.flow.model.top_speed  # a contrast all on one side at most
    # the score part is skew, so the step is checked against its stiffness
    assert m["creatures/drift_stiffness"] > 0 and m["creatures/heun_substeps"] >= 1
    assert 1 - 0.05 < m["creatures/heun_excess"] <= 1.01
    assert m["creatures/whole_travel_bodies"] >= 0

    with pytest.raises(RuntimeError, match="nothing to train"):
        flow.training_step(None, 0)
