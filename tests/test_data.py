import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from eqflow.data import Lorenz, ODESystem
from eqflow.dynamics import integrate_ode


def van_der_pol(x, mu=1.0):
    """A field defined outside eqflow, as a user would write it."""
    a, b = x.unbind(-1)
    return torch.stack([b, mu * (1 - a * a) * b - a], -1)


def test_a_new_ode_system_needs_only_a_yaml_naming_its_field():
    yaml = """
    _target_: eqflow.data.ODESystem
    vector_field: {_target_: test_data.van_der_pol, _partial_: true, mu: 1.5}
    dim: 2
    n_trajectories: 3
    n_steps: 300
    dt: 0.02
    burn_in_steps: 200
    """
    system = instantiate(OmegaConf.create(yaml))
    snaps = system.generate(torch.Generator().manual_seed(0))
    assert snaps.x.shape == (900, 2)
    torch.testing.assert_close(
        snaps.x.mean(0), torch.zeros(2, dtype=snaps.x.dtype), atol=1e-5, rtol=0
    )
    field = system.true_field(snaps)
    z = snaps.x[:5].double()
    raw = z * snaps.scale.double() + snaps.shift.double()
    torch.testing.assert_close(field(z), van_der_pol(raw, 1.5) / snaps.scale.double())


def test_lorenz_rk4_step_matches_hand_computation():
    f = Lorenz()
    x = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    dt = 0.01
    k1 = f(x)
    k2 = f(x + dt / 2 * k1)
    k3 = f(x + dt / 2 * k2)
    k4 = f(x + dt * k3)
    expected = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    torch.testing.assert_close(integrate_ode(f, x, dt, 1)[-1], expected)
    torch.testing.assert_close(
        f(x), torch.tensor([[10.0, 1 * (28 - 3) - 2, 2 - 8.0]], dtype=torch.float64)
    )


def test_burn_in_removes_the_transient_and_data_is_seeded():
    cfg = dict(vector_field=Lorenz(), dim=3, n_trajectories=2, n_steps=500, dt=0.01)
    clean = ODESystem(burn_in_steps=1000, **cfg).generate(torch.Generator().manual_seed(0))
    again = ODESystem(burn_in_steps=1000, **cfg).generate(torch.Generator().manual_seed(0))
    torch.testing.assert_close(clean.x, again.x)
    raw = clean.x * clean.scale + clean.shift
    # on the attractor |x| stays away from the origin region the N(0, I) start sits in
    assert raw.norm(dim=1).min() > 3.0


def test_bad_ode_settings_are_named():
    with pytest.raises(ValueError, match="data.n_steps"):
        ODESystem(Lorenz(), 3, n_steps=0)
    with pytest.raises(TypeError, match="data.vector_field"):
        ODESystem("lorenz", 3)
