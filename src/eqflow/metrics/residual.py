"""The continuity residual div v + v . s of a field v against a score s: zero where v preserves
the density whose score is s (div(p v) = p (div v + v . s))."""
from __future__ import annotations

from collections.abc import Callable

import torch

from eqflow.dynamics.divergence import jacobian, trace

Field = Callable[[torch.Tensor], torch.Tensor]


def continuity_residual(field: Field, score: Field, x: torch.Tensor) -> dict[str, float]:
    """At the points ``x`` (B, d): ``rms`` of div v + v . s (exact divergence by forward-mode
    autograd), ``rms_v_dot_s``, and ``relative`` = rms / rms_v_dot_s (0 for an equilibrium
    flow of the score's density; a field unrelated to it is of order 1)."""
    v, jac = jacobian(field, x)
    v_dot_s = (v * score(x)).sum(-1)
    residual = trace(jac) + v_dot_s

    def rms(t: torch.Tensor) -> float:
        return float(t.double().pow(2).mean().sqrt())

    scale = rms(v_dot_s)
    return {"rms": rms(residual), "rms_v_dot_s": scale,
            "relative": rms(residual) / scale if scale > 0 else float("nan")}
