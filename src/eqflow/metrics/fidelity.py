"""Fidelity of a dynamics to another: representations and sign-aligned |cos| tables."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch


@torch.no_grad()
def representation(f: Callable[[torch.Tensor], torch.Tensor], points: torch.Tensor) -> torch.Tensor:
    """The concatenation ``[f(x_1), ..., f(x_N)]`` as one vector of length N d."""
    return f(points).reshape(-1).double()


def align_signs(reps: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Flip each row of ``reps`` so that its dot product with ``reference`` is >= 0."""
    sign = torch.sign(reps @ reference)
    return reps * torch.where(sign == 0, 1.0, sign).unsqueeze(-1)


def aligned_abs_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """|cos| between two representations (sign-invariant: v and -v are the same flow)."""
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0).abs())


def similarity_table(
    groups: Mapping[str, Sequence[torch.Tensor] | torch.Tensor],
    reference: torch.Tensor | None = None,
) -> dict[tuple[str, str], tuple[float, float]]:
    """Mean and std of |cos| over all pairs (a in A, b in B) for every pair of groups.

    Within a group, pairs of a member with itself are left out unless the group has one member
    (then the entry is 1). Representations are sign-aligned to ``reference`` first (this does
    not change |cos|, but keeps the aligned vectors meaningful for later use, e.g. UMAP).
    """
    mats = {}
    for name, reps in groups.items():
        m = torch.stack(list(reps)) if not isinstance(reps, torch.Tensor) else reps
        m = m.double().reshape(m.shape[0], -1)
        if reference is not None:
            m = align_signs(m, reference.double())
        mats[name] = m / m.norm(dim=1, keepdim=True).clamp_min(1e-300)
    names = list(mats)
    table = {}
    for i, a in enumerate(names):
        for b in names[i:]:
            if a == b and len(mats[a]) == 1:  # a single member against itself
                table[(a, a)] = (1.0, 0.0)
                continue
            cos = (mats[a] @ mats[b].T).abs().clamp_max(1.0)  # rounding can exceed 1
            if a == b and len(cos) > 1:
                cos = cos[~torch.eye(len(cos), dtype=torch.bool)]
            vals = cos.reshape(-1)
            std = float(vals.std()) if vals.numel() > 1 else 0.0
            table[(a, b)] = table[(b, a)] = (float(vals.mean()), std)
    return table


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """cos between each image of ``a`` (B, ...) and ``b`` (one image or B of them)."""
    a = a.flatten(1).double()
    b = b.flatten(1).double().expand_as(a)
    return torch.nn.functional.cosine_similarity(a, b, dim=1)


def abs_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """|cos| between each image of ``a`` (B, ...) and ``b`` (one image or B of them)."""
    return cosine(a, b).abs()
