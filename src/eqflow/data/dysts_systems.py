"""The continuous chaotic systems of the dysts library (Gilpin 2021) as snapshot systems, with
their right-hand side as the ground-truth field. Optional: ``pip install "eqflow[dysts]"``.

The field is evaluated in torch: dysts writes each right-hand side as a plain function of the
coordinates and parameters (``_rhs(x, y, z, t, *params)``), which is run on torch tensors with
``np`` standing for torch, and checked against dysts' own (numpy) right-hand side at start-up;
a system whose function does not run on torch falls back to dysts' numpy evaluation (float64,
batched, no autograd).
"""

from __future__ import annotations

import difflib
import logging
import math
import types
from collections.abc import Callable

import numpy as np
import torch

from eqflow.data.base import check_data_settings
from eqflow.data.ode import ODESystem

log = logging.getLogger(__name__)

INSTALL = 'pip install "eqflow[dysts]"'

# Largest Lyapunov exponents (natural log, per unit time) published for dysts' default
# parameters; dysts' own stored estimates are looser (Lorenz 0.892, Rossler 0.151) and are not
# used as references.
PUBLISHED_LYAPUNOV: dict[str, tuple[float, str]] = {
    "Lorenz": (
        0.9056,
        "Sprott, Chaos and Time-Series Analysis (2003), Appendix A: spectrum "
        "0.9056, 0, -14.5723 at sigma 10, rho 28, beta 8/3",
    ),
    "Rossler": (
        0.0714,
        "Sprott, Chaos and Time-Series Analysis (2003), Appendix A: spectrum "
        "0.0714, 0, -5.3943 at a = b = 0.2, c = 5.7",
    ),
    "Chen": (
        2.0232,
        "Chen & Ueta, Int. J. Bifurcation and Chaos 9, 1465 (1999) parameters "
        "a 35, b 3, c 28; spectrum 2.0232, -0.0005, -12.0227 (RK4, dt 0.001), "
        "sites.google.com/view/lyapunov-spectrum",
    ),
}


def dysts_flows():
    try:
        import dysts.flows as flows
    except ImportError as exc:
        raise ImportError(
            f"data=dysts needs the dysts library, which is not installed: {INSTALL}"
        ) from exc
    return flows


def continuous_systems() -> list[str]:
    """Names of dysts' continuous systems without delay."""
    dysts_flows()
    from dysts.systems import get_attractor_list

    return list(get_attractor_list("continuous_no_delay"))


class _TorchAsNumpy:
    """``np`` inside a dysts right-hand side, evaluated with torch."""

    pi, e = math.pi, math.e
    _names = {
        "arctan": "atan",
        "arcsin": "asin",
        "arccos": "acos",
        "arctanh": "atanh",
        "power": "pow",
        "absolute": "abs",
        "arctan2": "atan2",
        "mod": "remainder",
    }

    def __getattr__(self, name: str):
        return getattr(torch, self._names.get(name, name))


class DystsField:
    """The right-hand side of dysts system ``name`` (its parameters, ``parameters`` overriding
    some) as a field on (B, d) tensors."""

    def __init__(self, name: str, parameters: dict | None = None):
        flows = dysts_flows()
        names = continuous_systems()
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            raise ValueError(
                f"data.system={name!r} is not a continuous dysts system"
                + (f"; did you mean {', '.join(close)}?" if close else "")
                + ' The list: python -c "from dysts.systems import '
                "get_attractor_list; print(get_attractor_list('continuous_no_delay'))\""
            )
        self.name = name
        self.system = getattr(flows, name)()
        if getattr(self.system, "nonautonomous", False):
            raise ValueError(
                f"data.system={name}: its right-hand side depends on time; eqflow "
                f"learns autonomous fields, pick another system"
            )
        unknown = set(parameters or {}) - set(self.system.params)
        if unknown:
            raise ValueError(
                f"data.parameters: {sorted(unknown)} are not parameters of {name} "
                f"(it has {sorted(self.system.params)})"
            )
        if parameters:
            self.system.params.update(
                {k: np.asarray(v, dtype=float) for k, v in parameters.items()}
            )
            self.system.param_list = [self.system.params[k] for k in sorted(self.system.params)]
        self.defaults = not parameters
        self.dim = int(np.asarray(self.system.ic).shape[-1])
        self.params = [
            float(np.asarray(v)) if np.ndim(v) == 0 else torch.as_tensor(v)
            for v in self.system.param_list
        ]
        self._torch_rhs = self._torch_form()

    def _torch_form(self) -> Callable | None:
        rhs = type(self.system)._rhs
        # numba's dispatcher keeps the Python function; with NUMBA_DISABLE_JIT=1 it is one
        fn = getattr(rhs, "py_func", rhs if isinstance(rhs, types.FunctionType) else None)
        if fn is None:
            return None
        shimmed = types.FunctionType(
            fn.__code__,
            {**fn.__globals__, "np": _TorchAsNumpy()},
            fn.__name__,
            fn.__defaults__,
            fn.__closure__,
        )
        x = torch.randn(
            16, self.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
        )
        x = x * torch.as_tensor(self.system.std, dtype=torch.float64) + torch.as_tensor(
            self.system.mean, dtype=torch.float64
        )
        try:
            got = self._stack(shimmed(*x.unbind(-1), 0.0, *self.params), x)
        except Exception as exc:  # noqa: BLE001 - any failure means: use numpy
            log.info(
                "dysts %s: the right-hand side does not run on torch (%s); using numpy",
                self.name,
                exc,
            )
            return None
        if not torch.allclose(got, self.numpy_field(x), rtol=1e-8, atol=1e-8):
            log.info(
                "dysts %s: the torch right-hand side differs from dysts'; using numpy", self.name
            )
            return None
        return shimmed

    @staticmethod
    def _stack(parts, x: torch.Tensor) -> torch.Tensor:
        parts = [
            p if torch.is_tensor(p) else torch.as_tensor(p, dtype=x.dtype, device=x.device)
            for p in parts
        ]
        return torch.stack(torch.broadcast_tensors(*[p.to(x) for p in parts]), -1)

    def numpy_field(self, x: torch.Tensor) -> torch.Tensor:
        """dysts' own right-hand side (numpy, float64) at ``x`` (B, d): one call for the batch
        where the system's ``rhs`` takes batches, else one call per point."""
        arr = x.detach().cpu().double().numpy()
        out = None
        if not getattr(self, "_rowwise", False):
            try:
                out = np.stack(np.broadcast_arrays(*self.system.rhs(arr, 0.0)), -1)
                if out.shape != arr.shape:
                    out = None
            except Exception:  # noqa: BLE001 - a right-hand side written for one state
                out = None
            self._rowwise = out is None
        if out is None:
            out = np.stack(
                [np.asarray(self.system.rhs(row, 0.0), dtype=float).reshape(-1) for row in arr]
            )
        return torch.from_numpy(np.ascontiguousarray(out)).to(x)

    @property
    def torch_native(self) -> bool:
        return self._torch_rhs is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(
                f"{self.name} is {self.dim}-dimensional; got points of shape {tuple(x.shape)}"
            )
        if self._torch_rhs is None:
            return self.numpy_field(x.reshape(-1, self.dim)).reshape(x.shape)
        params = [q.to(x) if torch.is_tensor(q) else q for q in self.params]  # array parameters
        return self._stack(self._torch_rhs(*x.unbind(-1), 0.0, *params), x)

    @property
    def reference_lyapunov(self) -> tuple[float, str] | None:
        """A published largest exponent for this system at dysts' default parameters."""
        return PUBLISHED_LYAPUNOV.get(self.name) if self.defaults else None


class DystsSystem(ODESystem):
    """Snapshots of dysts system ``system``: ``n_trajectories`` RK4 trajectories started near
    dysts' initial condition (``init_std`` times the attractor's std, per coordinate), the
    first ``burn_in_periods`` of each discarded, then ``n_steps`` states kept at
    ``steps_per_period`` steps per dominant period (dysts' ``period``); standardised."""

    def __init__(
        self,
        system: str,
        parameters: dict | None = None,
        n_trajectories: int = 10,
        n_steps: int = 5_000,
        steps_per_period: int = 150,
        burn_in_periods: float = 7.0,
        init_std: float = 0.1,
        standardise: bool = True,
        method: str = "rk4",
    ):
        field = DystsField(system, parameters)
        check_data_settings(steps_per_period=steps_per_period, burn_in_periods=burn_in_periods)
        self.period = float(field.system.period)
        super().__init__(
            field,
            field.dim,
            n_trajectories,
            n_steps,
            self.period / steps_per_period,
            int(round(burn_in_periods * steps_per_period)),
            init_std,
            standardise,
            method,
        )
        self.name = system

    def initial_states(self, generator: torch.Generator) -> torch.Tensor:
        sysm = self.vector_field.system
        ic = torch.as_tensor(np.asarray(sysm.ic, dtype=float)).reshape(-1)[: self.dim]
        std = torch.as_tensor(np.asarray(sysm.std, dtype=float)).reshape(-1)[: self.dim]
        noise = torch.randn(self.n_trajectories, self.dim, generator=generator, dtype=torch.float64)
        return ic + self.init_std * std * noise
