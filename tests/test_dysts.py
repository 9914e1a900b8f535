"""dysts systems: the torch field against dysts' own right-hand side, the Lorenz exponent through
the dysts path against the published value, and the errors for a missing extra or a bad name."""

import sys

import numpy as np
import pytest
import torch

pytest.importorskip("dysts", reason='the dysts extra: pip install -e ".[dysts]"')

from eqflow.data import DystsField, DystsSystem  # noqa: E402
from eqflow.data.dysts_systems import continuous_systems  # noqa: E402
from eqflow.metrics.lyapunov import max_lyapunov  # noqa: E402


def random_points(field: DystsField, n: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, field.dim, generator=g, dtype=torch.float64)
    return x * torch.as_tensor(np.asarray(field.system.std, dtype=float)) + torch.as_tensor(
        np.asarray(field.system.mean, dtype=float)
    )


@pytest.mark.parametrize(
    "name", ["Lorenz", "Rossler", "Chen", "Halvorsen", "Thomas", "SprottB", "Chua", "NoseHoover"]
)
@pytest.mark.slow
def test_the_field_is_dysts_right_hand_side_at_random_points(name):
    field = DystsField(name)
    x = random_points(field)
    expected = np.stack(np.broadcast_arrays(*field.system.rhs(x.numpy(), 0.0)), -1)
    assert field.torch_native
    assert torch.allclose(field(x), torch.from_numpy(expected), rtol=1e-10, atol=1e-10)
    assert field(x.float()).dtype == torch.float32  # follows its input, batched


@pytest.mark.slow
def test_every_autonomous_continuous_system_builds_and_matches_dysts():
    # numba compiles each system's right-hand side on its first call (about 0.5 s each, some
    # 130 systems); the same Python formulas run uncompiled in a child with NUMBA_DISABLE_JIT
    import os
    import subprocess
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", "import test_dysts; test_dysts.check_every_system()"],
        cwd=Path(__file__).parent,
        env={**os.environ, "NUMBA_DISABLE_JIT": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert "checked" in done.stdout


def check_every_system() -> None:
    """Every continuous dysts system builds, or is refused as time-dependent, and its field
    equals dysts' right-hand side on 16 points; most run natively on torch."""
    native = refused = 0
    for name in continuous_systems():
        try:
            field = DystsField(name)
        except ValueError as exc:
            assert "depends on time" in str(exc)
            refused += 1
            continue
        x = random_points(field, 16)
        expected = torch.from_numpy(
            np.stack(
                [  # dysts, one state at a time
                    np.asarray(field.system.rhs(row, 0.0), dtype=float).reshape(-1)
                    for row in x.numpy()
                ]
            )
        )
        got = field(x)  # one batched call
        both_finite = torch.isfinite(expected) & torch.isfinite(got)
        assert torch.allclose(got[both_finite], expected[both_finite], rtol=1e-8, atol=1e-8), name
        native += field.torch_native
    assert native >= 80 and refused < 30, (native, refused)
    print(f"checked: {native} native, {refused} refused")


def test_parameters_override_dysts_and_unknown_ones_are_refused():
    field = DystsField("Rossler", {"c": 6.0})
    x = random_points(field, 4)
    assert torch.allclose(field(x)[:, 2], 0.2 + x[:, 2] * x[:, 0] - 6.0 * x[:, 2])
    assert field.reference_lyapunov is None  # the published value is for the default parameters
    with pytest.raises(ValueError, match=r"\['rho'\] are not parameters of Rossler"):
        DystsField("Rossler", {"rho": 1.0})


def test_an_unknown_system_names_the_closest_ones():
    with pytest.raises(ValueError, match="did you mean Lorenz"):
        DystsField("Lorentz")


def test_a_missing_dysts_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "dysts.flows", None)  # import dysts.flows -> ImportError
    with pytest.raises(ImportError, match=r'pip install "eqflow\[dysts\]"'):
        DystsField("Lorenz")


def test_snapshots_are_standardised_and_the_truth_is_the_field_in_their_coordinates():
    system = DystsSystem("Rossler", n_trajectories=4, n_steps=200)
    snaps = system.generate(torch.Generator().manual_seed(0))
    assert snaps.x.shape == (800, 3)
    assert torch.allclose(snaps.x.mean(0), torch.zeros(3), atol=1e-4)
    truth = system.true_field(snaps)
    z = snaps.x[:5].double()
    raw = z * snaps.scale.double() + snaps.shift.double()
    assert torch.allclose(truth(z), system.vector_field(raw) / snaps.scale.double(), atol=1e-6)


@pytest.mark.slow
def test_the_lorenz_exponent_through_dysts_is_within_5_percent_of_0_906():
    system = DystsSystem("Lorenz", n_trajectories=8, n_steps=13)  # >= 100 snapshots
    g = torch.Generator().manual_seed(0)
    snaps = system.generate(g)
    starts = snaps.x[::10][:8].double() * snaps.scale.double() + snaps.shift.double()
    res = max_lyapunov(system.vector_field, starts, system.dt, 30_000, burn_in=2_000, generator=g)
    published, source = system.vector_field.reference_lyapunov
    assert published == pytest.approx(0.906, abs=1e-3) and "Sprott" in source
    assert res["lyapunov"] == pytest.approx(published, rel=0.05)


@pytest.mark.slow
def test_a_multirun_over_systems_gives_one_cross_system_table(tmp_path):
    import json
    import subprocess
    import sys as _sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sweep = tmp_path / "multirun"
    common = [f"paths.cache_dir={tmp_path / 'cache'}", "logger=none"]
    subprocess.run(
        [
            _sys.executable,
            "train.py",
            "-m",
            "experiment=dysts_study",
            "data.system=Rossler,Halvorsen",
            "data.n_steps=300",
            "data.n_trajectories=4",
            "score.epochs=2",
            "trainer.max_epochs=2",
            "flow.ensemble=2",
            "measure.lyapunov.steps=100",
            "measure.lyapunov.burn_in=10",
            "trainer.enable_progress_bar=false",
            f"hydra.sweep.dir={sweep}",
            *common,
        ],
        cwd=root,
        check=True,
        capture_output=True,
        timeout=600,
    )
    out = tmp_path / "eval"
    done = subprocess.run(
        [
            _sys.executable,
            "evaluate.py",
            f"sweep={sweep}",
            "n_points=128",
            "mmd.steps=5",
            "mmd.n_points=64",
            "chaos.long_horizon=0",
            "systems.true_exponent_periods=20",
            f"hydra.run.dir={out}",
            *common,
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "| Rossler | 2 |" in done.stdout and "| Halvorsen | 2 |" in done.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "systems"
    rows = {r["system"]: r for r in summary["systems"]}
    assert rows["Rossler"]["published_exponent"] == 0.0714
    assert rows["Rossler"]["true_exponent"] > 0 and rows["Halvorsen"]["true_exponent"] > 0
    for r in rows.values():
        assert 0 <= r["learned | ground truth"] <= 1 and 0 <= r["learned | learned"] <= 1
    for system in ("Rossler", "Halvorsen"):  # each system's own full report
        assert (out / system / "table1.md").exists() and (out / system / "report.md").exists()
