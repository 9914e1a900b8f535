"""The SDE's stiffness where the denoiser is sure, and the Heun substeps that keep it stable."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from eqflow.config import validate
from eqflow.dynamics.integrators import sde_heun
from eqflow.dynamics.stiffness import (
    SUBSTEP_TOLERANCE,
    drift_is_skew_in_score,
    heun_amplification,
    sde_damping,
    skew_operator_norm,
    stable_substeps,
    step_excess,
)
from eqflow.models.score import Score
from eqflow.models.training_free import TrainingFreeFlow
from eqflow.protocols.creatures import Creatures
from eqflow.protocols.langevin import flow_stiffness

PUBLISHED_DT, ETA, NOISE_VAR = 0.05, 0.1, 0.055  # the alife SDE at the flow's level


def test_one_heun_step_multiplies_the_stiffest_mode_by_the_amplification():
    rho, dt, nv = 1.3, 0.05, NOISE_VAR
    A = torch.tensor([[0.0, rho], [-rho, 0.0]], dtype=torch.float64)
    x0 = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    x1 = sde_heun(
        lambda x, s: s @ A.T,
        lambda x: -x / nv,  # the score where the clean value is certain: J_s = -I / (1 - a)
        x0,
        dt,
        1,
        ETA,
        drift_from_score=True,
        noise=torch.zeros_like,  # the deterministic part: what the scheme does to the mode
    )
    assert float(x1.norm()) == pytest.approx(heun_amplification(rho, ETA, dt, nv), rel=1e-12)
    # a slow mode is damped as the SDE damps it; a fast one is amplified past 1
    assert heun_amplification(1e-3, ETA, 1e-3, nv) == pytest.approx(
        sde_damping(ETA, 1e-3, nv), rel=1e-6
    )
    assert heun_amplification(2.0, ETA, dt, nv) > 1


def test_substeps_keep_the_scheme_within_the_tolerance_of_the_damping():
    # a random unit channel kernel (rho = 1 / sqrt 2) runs one step; a twice stiffer one three
    assert stable_substeps(1 / math.sqrt(2), ETA, PUBLISHED_DT, NOISE_VAR) == 1
    for rho in (1.17, 1.45, 3.0):
        k = stable_substeps(rho, ETA, PUBLISHED_DT, NOISE_VAR)
        assert k > 1
        assert step_excess(rho, ETA, PUBLISHED_DT, NOISE_VAR, k) <= 1 + SUBSTEP_TOLERANCE
        assert step_excess(rho, ETA, PUBLISHED_DT, NOISE_VAR, k - 1) > 1 + SUBSTEP_TOLERANCE
    assert stable_substeps(1.45, ETA, PUBLISHED_DT, NOISE_VAR) == 3
    with pytest.raises(ValueError, match="measure.creatures.dt"):
        stable_substeps(1e4, ETA, PUBLISHED_DT, NOISE_VAR)


def test_the_operator_norm_matches_the_dense_operators():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(3, 6, 6, generator=g)
    skew = m - m.transpose(1, 2)

    def apply(u):
        return torch.einsum("bij,bj->bi", skew, u)

    norms = skew_operator_norm(apply, (3, 6), g, iterations=200)
    assert torch.allclose(norms, torch.linalg.matrix_norm(skew, ord=2), rtol=1e-4)


def test_only_a_skew_linear_drift_is_read_as_one():
    g = torch.Generator().manual_seed(1)
    m = torch.randn(5, 5, generator=g)
    x, u, w = (torch.randn(2, 5, generator=g) for _ in range(3))
    assert drift_is_skew_in_score(lambda x, s: s @ (m - m.T), x, u, w)
    assert not drift_is_skew_in_score(lambda x, s: s @ (m + m.T), x, u, w)
    assert not drift_is_skew_in_score(lambda x, s: torch.tanh(s) @ (m - m.T), x, u, w)


class _CertainScore(Score, torch.nn.Module):
    """The score of N(0, (1 - a) I): the clean image is certain everywhere."""

    def __init__(self, a: float):
        torch.nn.Module.__init__(self)
        self.alpha = torch.tensor(a)

    def score(self, x):
        return -x / (1 - self.alpha)


def _channel_flow(norm: float) -> TrainingFreeFlow:
    flow = TrainingFreeFlow(_CertainScore(1 - NOISE_VAR), 3, seed=2, spatial=True)
    flow.D.mul_(norm)  # D of Frobenius norm `norm`: spectral radius norm / sqrt 2
    return flow


def test_a_run_steps_the_channel_kernel_once_and_a_stiffer_one_more_often():
    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    unit = flow_stiffness(_channel_flow(1.0), images, ETA, PUBLISHED_DT)
    assert unit["drift_stiffness"] == pytest.approx(1 / math.sqrt(2), rel=1e-4)
    assert unit["heun_substeps"] == 1
    assert unit["heun_excess"] == pytest.approx(
        step_excess(1 / math.sqrt(2), ETA, PUBLISHED_DT, NOISE_VAR, 1), rel=1e-3
    )
    stiff = flow_stiffness(_channel_flow(2.0), images, ETA, PUBLISHED_DT)
    assert stiff["drift_stiffness"] == pytest.approx(math.sqrt(2), rel=1e-4)
    assert stiff["heun_substeps"] == stable_substeps(math.sqrt(2), ETA, PUBLISHED_DT, NOISE_VAR)
    assert stiff["heun_substeps"] > 1
    assert flow_stiffness(_channel_flow(2.0), images, ETA, PUBLISHED_DT, 1)["heun_excess"] > 1.05
    # a drift that is not a skew map of the score keeps one step and reports no stiffness
    bent = _channel_flow(1.0)
    bent.drift = lambda x, s: torch.tanh(s)
    assert flow_stiffness(bent, images, ETA, PUBLISHED_DT) == {"heun_substeps": 1}


@pytest.mark.parametrize("value", [0, -1, 1.5, "fast"])
def test_a_wrong_substeps_setting_is_named(value):
    with pytest.raises(ValueError, match="measure.creatures.substeps"):
        Creatures(substeps=value)
    with pytest.raises(ValueError, match="measure.creatures.substeps"):
        validate(OmegaConf.create({"measure": {"creatures": {"substeps": value}}}))
    validate(OmegaConf.create({"measure": {"creatures": {"substeps": "auto"}}}))


def test_table2_records_its_step_and_warns_where_it_leaks(caplog):
    from eqflow.protocols.base import Measurement
    from eqflow.protocols.patterns import Patterns

    images = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(4)) * 2 - 1
    table2 = Patterns()  # dt 0.01: a unit channel kernel is within 0.01 % of the damping
    out = Measurement()
    table2.check_step(out, flow_stiffness(_channel_flow(1.0), images, table2.eta, table2.dt, 1))
    assert out.values["table2/heun_excess"] == pytest.approx(1.0, abs=1e-3)
    assert "heun_substeps" not in str(out.values) and not caplog.records
    coarse = Patterns(dt=0.1)
    out = Measurement()
    coarse.check_step(out, flow_stiffness(_channel_flow(1.0), images, coarse.eta, coarse.dt, 1))
    assert out.values["table2/heun_excess"] > 1 + SUBSTEP_TOLERANCE
    assert "measure.patterns.dt" in caplog.text
