"""The continuity residual div v + v . s of a field v against a score s: zero where v preserves
the density whose score is s (div(p v) = p (div v + v . s))."""

from __future__ import annotations

from collections.abc import Callable

import torch

from eqflow.dynamics.divergence import jacobian, trace

Field = Callable[[torch.Tensor], torch.Tensor]

# below this share of rms(|v| |s|), v . s counts as identically zero (v = D s with a skew D)
ZERO_V_DOT_S = 1e-6


def continuity_residual(field: Field, score: Field, x: torch.Tensor) -> dict[str, float]:
    """At the points ``x`` (B, d): ``rms`` of div v + v . s (exact divergence by forward-mode
    autograd) and two relative sizes of it:

    - ``relative``: rms / rms(v . s), the share of the term the equation balances (0 for an
      equilibrium flow of the score's density, ~1 for a field unrelated to it). NaN where
      v . s vanishes identically (a training-free flow v = D s: s . D s = 0), as a ratio of
      two rounding errors would mislead;
    - ``relative_to_speed_score``: rms / rms(|v| |s|), defined for every field.
    """
    v, jac = jacobian(field, x)
    s = score(x)
    v_dot_s = (v * s).sum(-1)
    residual = trace(jac) + v_dot_s

    def rms(t: torch.Tensor) -> float:
        return float(t.detach().double().pow(2).mean().sqrt())

    size = rms(v.norm(dim=-1) * s.norm(dim=-1))
    along = rms(v_dot_s)
    return {
        "rms": rms(residual),
        "rms_v_dot_s": along,
        "relative": rms(residual) / along if along > ZERO_V_DOT_S * size else float("nan"),
        "relative_to_speed_score": rms(residual) / size if size > 0 else float("nan"),
    }
