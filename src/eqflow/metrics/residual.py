"""The continuity residual div v + v . s of a field v against a score s: zero where v preserves
the density whose score is s (div(p v) = p (div v + v . s))."""

from __future__ import annotations

from collections.abc import Callable

import torch

from eqflow.dynamics.divergence import jacobian, trace

Field = Callable[[torch.Tensor], torch.Tensor]

# below this share of rms(|v| |s|), v . s counts as identically zero (v = D s with a skew D)
ZERO_V_DOT_S = 1e-6


# points a Jacobian is taken at at once: B d^2 numbers per activation stay near 2^17 (at d = 20
# all 1 024 points at once peaked at 9 GB; the result does not depend on the chunks)
JACOBIAN_BUDGET = 2**17


def _chunk_size(d: int) -> int:
    return max(1, JACOBIAN_BUDGET // (d * d))


def _terms(field: Field, score: Field, x: torch.Tensor) -> tuple:
    """|v|, |s|, v . s and div v + v . s at the points ``x``."""
    v, jac = jacobian(field, x)
    s = score(x)
    v_dot_s = (v * s).sum(-1)
    return v.norm(dim=-1), s.norm(dim=-1), v_dot_s, (trace(jac) + v_dot_s).detach()


def continuity_residual(field: Field, score: Field, x: torch.Tensor) -> dict[str, float]:
    """At the points ``x`` (B, d): ``rms`` of div v + v . s (exact divergence by forward-mode
    autograd) and two relative sizes of it:

    - ``relative``: rms / rms(v . s), the share of the term the equation balances (0 for an
      equilibrium flow of the score's density, ~1 for a field unrelated to it). NaN where
      v . s vanishes identically (a training-free flow v = D s: s . D s = 0), as a ratio of
      two rounding errors would mislead;
    - ``relative_to_speed_score``: rms / rms(|v| |s|), defined for every field.
    """
    parts = [_terms(field, score, chunk) for chunk in x.split(_chunk_size(x.shape[-1]))]
    v_norm, s_norm, v_dot_s, residual = (torch.cat(p) for p in zip(*parts))

    def rms(t: torch.Tensor) -> float:
        return float(t.detach().double().pow(2).mean().sqrt())

    size = rms(v_norm * s_norm)
    along = rms(v_dot_s)
    return {
        "rms": rms(residual),
        "rms_v_dot_s": along,
        "relative": rms(residual) / along if along > ZERO_V_DOT_S * size else float("nan"),
        "relative_to_speed_score": rms(residual) / size if size > 0 else float("nan"),
    }
