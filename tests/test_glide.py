"""flow=glide: each creature advected along its own heading (eqflow.dynamics.heading,
eqflow.models.GlideFlow). Checked on a smooth two-colour creature whose heading is known:
it reads one heading over the whole body, the heading turns with the creature, a creature
without a front does not move, and the flow carries the creature its speed times the time."""

import math

import pytest
import torch

from eqflow.dynamics.heading import background_colour, dipole_kernel, heading_channels
from eqflow.dynamics.transport import central_advection
from eqflow.models import GlideFlow
from eqflow.models.score import Score

SIZE = 48
FRONT, BACK = (1.0, -1.0, -1.0), (-1.0, -0.5, 1.0)  # red ahead, blue behind, on white


class _Clean(Score, torch.nn.Module):
    """A score model at level a = 1 whose score is zero: Tweedie's denoised image is x itself."""

    def __init__(self):
        torch.nn.Module.__init__(self)
        self.alpha = torch.tensor(1.0)

    def score(self, x):
        return torch.zeros_like(x)


def _creature(turn: float = 0.0, centre=(24.0, 24.0), colours=(FRONT, BACK), sep=3.0):
    """(1, 3, SIZE, SIZE): two Gaussian blobs (width 2 px) ``sep`` px either side of ``centre``
    (y, x), the first ahead along the heading ``turn`` (radians from +x), on a white canvas."""
    ys, xs = torch.meshgrid(torch.arange(SIZE * 1.0), torch.arange(SIZE * 1.0), indexing="ij")
    x = torch.ones(1, 3, SIZE, SIZE)
    for sign, colour in zip((1, -1), colours, strict=True):
        cy = centre[0] + sign * sep * math.sin(turn)
        cx = centre[1] + sign * sep * math.cos(turn)
        dy = (ys - cy + SIZE / 2) % SIZE - SIZE / 2
        dx = (xs - cx + SIZE / 2) % SIZE - SIZE / 2
        blob = torch.exp(-(dx**2 + dy**2) / 8)
        x = x + blob * (torch.tensor(colour) - 1).view(1, 3, 1, 1)
    return x


def _flow(data):
    flow = GlideFlow(_Clean(), 3, speed=1.0, spatial=True)
    flow.calibrate(data)
    return flow


def _contrast_centre(x):
    """(x, y) centroid of the squared contrast against white."""
    mass = (x - 1).pow(2).sum(1)[0]
    ys, xs = torch.meshgrid(torch.arange(SIZE * 1.0), torch.arange(SIZE * 1.0), indexing="ij")
    return torch.stack([(mass * xs).sum(), (mass * ys).sum()]) / mass.sum()


def _body(x):
    return (x - 1).pow(2).sum(1)[0] > 0.05


def test_a_uniform_image_has_no_dipole_and_the_background_is_its_commonest_colour():
    kernel = dipole_kernel(2.0)
    assert kernel.sum((1, 2, 3)).abs().max() < 1e-7  # odd in r
    data = torch.cat([_creature(), _creature(turn=1.0)])
    assert torch.allclose(background_colour(data), torch.ones(3), atol=0.05)


def test_the_heading_channels_hold_the_colour_difference_and_no_net_contrast():
    data = torch.cat([_creature(turn=t) for t in (0.0, 1.0, 2.5)])
    w = heading_channels(data, 2.0)
    net = (torch.tensor(FRONT) - 1) + (torch.tensor(BACK) - 1)  # the creature's net contrast
    assert abs(float(w @ net)) < 1e-3 * float(net.norm())
    assert abs(float(w @ (torch.tensor(FRONT) - torch.tensor(BACK)))) > 1.0
    with pytest.raises(ValueError, match="front cannot be told from its back"):
        heading_channels(data[:, :1], 2.0)  # one channel: a net contrast only


@pytest.mark.parametrize("turn", [0.0, math.pi / 2, 2.2])
def test_the_whole_body_reads_one_heading_that_turns_with_the_creature(turn):
    x = _creature(turn)
    flow = _flow(x)
    u = flow.glide_velocity(x)[0][:, _body(x)]  # (2, pixels of the body)
    heading = torch.tensor([math.cos(turn), math.sin(turn)])
    along = heading @ u
    # one direction over the whole body, full speed over most of it (its sign: the channels')
    assert (along.sign() == along[0].sign()).all()
    assert along.abs().median() > 0.95 and along.abs().min() > 0.75
    across = torch.tensor([-heading[1], heading[0]]) @ u
    assert across.abs().max() < 0.02


def test_the_velocity_shifts_with_the_image():
    x = _creature(0.7)
    flow = _flow(x)
    moved = torch.roll(x, (5, -9), (-2, -1))
    assert torch.allclose(
        flow.glide_velocity(moved), torch.roll(flow.glide_velocity(x), (5, -9), (-2, -1)), atol=1e-5
    )


def _glide(flow, x, time: float = 10.0, dt: float = 0.05):
    for _ in range(round(time / dt)):  # Heun steps of the drift alone
        k1 = flow.velocity(x)
        k2 = flow.velocity(x + dt * k1)
        x = x + dt * (k1 + k2) / 2
    return x


def test_glide_carries_a_creature_its_speed_times_the_time_and_keeps_it():
    x = _creature(turn=0.0)
    flow = _flow(x)
    out = _glide(flow, x)
    moved = _contrast_centre(out) - _contrast_centre(x)
    # 10 px at 1 px per unit time, less central differences' lag on the blobs' tails
    assert 8.5 < abs(float(moved[0])) < 10.5 and abs(float(moved[1])) < 0.2
    shifted = torch.roll(x, round(float(moved[0])), -1)
    kept = torch.nn.functional.cosine_similarity((shifted - 1).flatten(), (out - 1).flatten(), 0)
    assert kept > 0.9
    backwards = _glide(flow, _creature(turn=math.pi))  # the half-turned creature goes back
    assert float((_contrast_centre(backwards) - _contrast_centre(x))[0] * moved[0]) < -70


def test_a_creature_without_a_front_stays_where_and_as_it_is():
    trained_on = torch.cat([_creature(turn=t) for t in (0.0, 1.0)])
    flow = _flow(trained_on)
    for colours in ((FRONT, FRONT), (BACK, BACK)):  # mirror-symmetric, one sign of contrast
        same = _creature(colours=colours)
        assert flow.glide_velocity(same).norm(dim=1).max() < 1e-3
        out = _glide(flow, same)
        kept = torch.nn.functional.cosine_similarity((same - 1).flatten(), (out - 1).flatten(), 0)
        assert kept > 0.999


def test_glide_is_divergence_free_where_the_heading_does_not_read_the_pixel():
    """central_advection: d v_p / d x_p = 0 for a velocity that ignores x; the trace by autograd."""
    x = torch.randn(1, 3, 6, 7, dtype=torch.float64, requires_grad=True)
    u = torch.randn(1, 2, 6, 7, dtype=torch.float64)
    v = central_advection(x, u)
    jac = torch.autograd.functional.jacobian(lambda y: central_advection(y, u).flatten(), x)
    assert abs(float(jac.reshape(v.numel(), v.numel()).trace())) < 1e-12


def test_an_uncalibrated_or_vector_glide_says_what_to_do():
    flow = GlideFlow(_Clean(), 3, spatial=True)
    with pytest.raises(RuntimeError, match="calibrate"):
        flow.velocity(_creature())
    with pytest.raises(ValueError, match="images"):
        GlideFlow(_Clean(), 3)
    with pytest.raises(ValueError, match="window_sigma"):
        GlideFlow(_Clean(), 3, window_sigma=0.0, spatial=True)


def test_a_tiny_alife_run_glides(tmp_path):
    """flow=glide through the pipeline: calibrated from the run's scatters when it is built,
    measured as a training-free flow, reloaded with the same calibration."""
    from helpers import TINY_ALIFE, compose_train

    from eqflow import pipeline
    from eqflow.runs import load_run

    cfg = compose_train(
        [*TINY_ALIFE, "flow=glide", "measure.creatures.steps=20"], tmp_path, tiny=False
    )
    result = pipeline.train(cfg)
    assert math.isfinite(result.metrics["creatures/flow_content_share"])
    assert result.metrics["creatures/heun_substeps"] == 1  # not a skew map of the score
    (result.output_dir / ".hydra").mkdir()
    from omegaconf import OmegaConf

    OmegaConf.save(cfg, result.output_dir / ".hydra" / "config.yaml")
    run = load_run(result.output_dir, str(tmp_path / "cache"), need_metrics=False)
    assert isinstance(run.flow, GlideFlow) and run.flow.levels[3] > 0
    assert torch.allclose(run.flow.channels, result.flow.channels)


@pytest.mark.parametrize(
    "override", ["flow.model.order=3", "flow.model.speed=-1", "flow.model.window_sigma=abc"]
)
def test_a_bad_glide_override_names_its_fix(override):
    from helpers import compose_train

    from eqflow.config import validate
    from eqflow.errors import ConfigError

    cfg = compose_train(["experiment=alife", "flow=glide", override], tiny=False)
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        validate(cfg)
