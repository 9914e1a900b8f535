"""Divergence of a per-sample vector field: exact (Jacobian trace) or Hutchinson's estimate.

``f`` maps a batch ``(B, d)`` to ``(B, d)`` and must act on each sample independently (no
batch coupling: pass a batch norm's statistics in as constants). Leading axes are allowed:
``(K, B, d)`` for an ensemble of K fields, each on its own batch. Everything is forward-mode
(``torch.func.jvp``) and vectorised over probe vectors with ``torch.func.vmap``, so gradients
with respect to the parameters of ``f`` flow through the result.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import jvp, vmap

METHODS = ("exact", "hutchinson")
PROBES = ("gaussian", "rademacher")


def probe_vectors(x: torch.Tensor, n: int, probe: str, generator: torch.Generator | None):
    shape = (n, *x.shape)
    if probe == "gaussian":
        return torch.randn(shape, generator=generator, device=x.device, dtype=x.dtype)
    if probe == "rademacher":
        bits = torch.randint(0, 2, shape, generator=generator, device=x.device)
        return (2 * bits - 1).to(x.dtype)
    raise ValueError(f"unknown probe {probe!r}; choose one of {PROBES}")


def _jvps(f: Callable, x: torch.Tensor, tangents: torch.Tensor):
    """``f(x)`` and ``J_f(x) t`` for every tangent in ``tangents`` (n, B, d)."""
    fx, jz = vmap(lambda t: jvp(f, (x,), (t,)), out_dims=(None, 0), randomness="same")(tangents)
    return fx, jz


def divergence_estimates(
    f: Callable,
    x: torch.Tensor,
    method: str = "exact",
    n_probes: int = 10,
    probe: str = "gaussian",
    generator: torch.Generator | None = None,
    probes: torch.Tensor | None = None,
):
    """Return ``(f(x), estimates)``.

    ``estimates`` has shape ``(n, B)``: for ``exact`` one row, the trace of the Jacobian; for
    ``hutchinson`` one row per probe ``z``, each ``z^T J z`` (unbiased for the divergence).
    ``probes`` (n, *x.shape) replaces the probe vectors drawn from ``generator``.
    """
    if x.ndim < 2:
        raise ValueError(f"x must have shape (batch, dim), got {tuple(x.shape)}")
    if method == "exact":
        fx, jac = jacobian(f, x)
        return fx, trace(jac)[None]
    if method == "hutchinson":
        if n_probes < 1:
            raise ValueError(f"n_probes must be >= 1, got {n_probes}")
        z = probe_vectors(x, n_probes, probe, generator) if probes is None else probes
        fx, jz = _jvps(f, x, z)
        return fx, (z * jz).sum(-1)
    raise ValueError(f"unknown divergence method {method!r}; choose one of {METHODS}")


def jacobian(f: Callable, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f(x), J)`` with ``J[..., b, i, j] = d f_i / d x_j`` at each row of ``x`` (d JVPs)."""
    if x.ndim < 2:
        raise ValueError(f"x must have shape (batch, dim), got {tuple(x.shape)}")
    d = x.shape[-1]
    lead = (1,) * (x.ndim - 1)
    basis = torch.eye(d, dtype=x.dtype, device=x.device).reshape(d, *lead, d).expand(d, *x.shape)
    fx, columns = _jvps(f, x, basis)  # columns[j, ..., b, :] = J[..., b, :, j]
    return fx, columns.movedim(0, -1)


def trace(jac: torch.Tensor) -> torch.Tensor:
    """The trace of each Jacobian in ``jac`` (B, d, d): the divergence."""
    return torch.diagonal(jac, dim1=-2, dim2=-1).sum(-1)


def hutchinson_variance(jac: torch.Tensor, probe: str = "gaussian") -> torch.Tensor:
    """Variance of one Hutchinson estimate ``z^T J z`` given the Jacobians ``jac`` (B, d, d).

    With S the symmetric part of J: Gaussian probes give 2 ||S||_F^2 (= ||J||_F^2 + tr(J^2)),
    Rademacher probes 2 ||S||_F^2 - 2 sum_i J_ii^2 (the diagonal is estimated exactly).
    """
    sym = 0.5 * (jac + jac.transpose(-1, -2))
    var = 2 * sym.pow(2).sum((-1, -2))
    if probe == "gaussian":
        return var
    if probe == "rademacher":
        return var - 2 * torch.diagonal(jac, dim1=-2, dim2=-1).pow(2).sum(-1)
    raise ValueError(f"unknown probe {probe!r}; choose one of {PROBES}")


def divergence(
    f: Callable,
    x: torch.Tensor,
    method: str = "exact",
    n_probes: int = 10,
    probe: str = "gaussian",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Divergence of ``f`` at each row of ``x`` (shape ``(B,)``)."""
    _, est = divergence_estimates(f, x, method, n_probes, probe, generator)
    return est.mean(0)
