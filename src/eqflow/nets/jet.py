"""MLPs evaluated together with their derivatives with respect to the input (forward jets).

A :class:`JetMLP` maps ``x`` (K, B, d) through a positional encoding and a smooth MLP to
(K, B, m); every weight carries a leading member axis, so K networks of one architecture (an
ensemble) run as batched matrix products. Besides the value, ``jet(x, order)`` carries the
Jacobian (order 1) and the Hessian (order 2) through the layers in the same pass: a linear map
acts on value and derivatives alike, an activation by the chain rule
(J' = sigma'(h) J, H' = sigma''(h) J J^T + sigma'(h) H). That is exact, needs no autograd, and
costs one batched product per layer for all derivatives at once.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

JET_ACTIVATIONS = ("silu", "tanh")


def _activation(h: torch.Tensor, name: str):
    """sigma(h), sigma'(h), sigma''(h)."""
    if name == "silu":
        sig = torch.sigmoid(h)
        d1 = sig * (1 + h * (1 - sig))
        d2 = sig * (1 - sig) * (2 + h * (1 - 2 * sig))
        return h * sig, d1, d2
    if name == "tanh":
        t = torch.tanh(h)
        d1 = 1 - t * t
        return t, d1, -2 * t * d1
    raise ValueError(f"activation {name!r} has no jet; choose one of {JET_ACTIVATIONS}")


class JetMLP(nn.Module):
    """K MLPs ``[x, sin(2^i x), cos(2^i x)] -> hidden -> out`` with a leading member axis.

    ``members`` networks are initialised like ``nn.Linear`` layers, member after member, so a
    single network built after ``torch.manual_seed(s)`` equals member 0 of any stack built the
    same way from that seed (:meth:`stack` joins single networks into one).
    """

    def __init__(self, dim: int, out: int, hidden: Sequence[int] = (64, 64),
                 activation: str = "silu", n_freqs: int = 4, members: int = 1):
        super().__init__()
        if activation not in JET_ACTIVATIONS:
            raise ValueError(f"flow.model.activation={activation!r}: the exact flow needs a smooth "
                             f"activation with a second derivative; choose one of {JET_ACTIVATIONS}")
        self.dim, self.out, self.activation, self.n_freqs = dim, out, activation, n_freqs
        self.register_buffer("freqs", 2.0 ** torch.arange(n_freqs, dtype=torch.float32))
        sizes = [dim * (1 + 2 * n_freqs), *hidden, out]
        weights, biases = [], []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers = [nn.Linear(a, b) for _ in range(members)]
            weights.append(nn.Parameter(torch.stack([lin.weight.detach() for lin in layers])))
            biases.append(nn.Parameter(torch.stack([lin.bias.detach() for lin in layers])))
        self.weights = nn.ParameterList(weights)
        self.biases = nn.ParameterList(biases)

    @property
    def members(self) -> int:
        return self.weights[0].shape[0]

    @classmethod
    def stack(cls, nets: Sequence["JetMLP"]) -> "JetMLP":
        """One network holding the members of every net in ``nets``, in order."""
        first = nets[0]
        hidden = [w.shape[1] for w in first.weights[:-1]]
        out = cls(first.dim, first.out, hidden, first.activation, first.n_freqs, members=1)
        with torch.no_grad():
            for i in range(len(first.weights)):
                out.weights[i] = nn.Parameter(torch.cat([n.weights[i].detach() for n in nets]))
                out.biases[i] = nn.Parameter(torch.cat([n.biases[i].detach() for n in nets]))
        return out.to(first.freqs)

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k`` as the state dict of a one-member :class:`JetMLP`."""
        state = {"freqs": self.freqs.clone()}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            state[f"weights.{i}"] = w[k:k + 1].detach().clone()
            state[f"biases.{i}"] = b[k:k + 1].detach().clone()
        return state

    def _encoding(self, x: torch.Tensor, order: int) -> torch.Tensor:
        """The encoding and its derivatives as tangents (K, B, T, E), T = 1 + d (+ d^2)."""
        d = x.shape[-1]
        f = self.freqs.to(x)
        fx = x.unsqueeze(-1) * f                                    # (K, B, d, F)
        sin, cos = fx.sin(), fx.cos()
        one = torch.ones_like(x).unsqueeze(-1)
        g = torch.cat([x.unsqueeze(-1), sin, cos], -1)              # (K, B, d, 1 + 2F)
        rows = [g.flatten(-2).unsqueeze(-2)]
        if order >= 1:  # d g_c / d x_k is zero unless k = c
            g1 = torch.cat([one, f * cos, -f * sin], -1)
            eye = torch.eye(d, dtype=x.dtype, device=x.device)
            rows.append((eye[:, :, None] * g1.unsqueeze(-3)).flatten(-2))  # (K, B, d_k, E)
        if order >= 2:
            g2 = torch.cat([torch.zeros_like(one), -f * f * sin, -f * f * cos], -1)
            diag = torch.zeros(d, d, d, dtype=x.dtype, device=x.device)
            idx = torch.arange(d, device=x.device)
            diag[idx, idx, idx] = 1
            hess = diag[:, :, :, None] * g2[..., None, None, :, :]   # (K, B, k, l, c, 1 + 2F)
            rows.append(hess.flatten(-2).flatten(-3, -2))             # (K, B, d^2, E)
        return torch.cat(rows, -2)

    def jet(self, x: torch.Tensor, order: int = 0):
        """``(value, jacobian, hessian)`` at ``x`` (K, B, d): value (K, B, m), jacobian
        (K, B, d, m) with [k, i] = d out_i / d x_k, hessian (K, B, d, d, m); those beyond
        ``order`` are None."""
        if x.ndim != 3 or x.shape[0] != self.members:
            raise ValueError(f"JetMLP of {self.members} members needs x of shape "
                             f"({self.members}, B, {self.dim}), got {tuple(x.shape)}")
        K, B, d = x.shape
        t = self._encoding(x, order)
        n_tan = t.shape[-2]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.bmm(t.reshape(K, B * n_tan, -1), w.transpose(1, 2)).reshape(K, B, n_tan, -1)
            h = torch.cat([h[:, :, :1] + b[:, None, None], h[:, :, 1:]], 2)
            if i == last:
                t = h
                break
            s0, s1, s2 = _activation(h[:, :, 0], self.activation)
            rows = [s0.unsqueeze(2)]
            if order >= 1:
                jac = h[:, :, 1:1 + d]
                rows.append(s1.unsqueeze(2) * jac)
            if order >= 2:
                hess = h[:, :, 1 + d:].reshape(K, B, d, d, -1)
                second = (s2[:, :, None, None] * jac[:, :, :, None] * jac[:, :, None, :]
                          + s1[:, :, None, None] * hess)
                rows.append(second.flatten(2, 3))
            t = torch.cat(rows, 2)
        value = t[:, :, 0]
        jac = t[:, :, 1:1 + d] if order >= 1 else None
        hess = t[:, :, 1 + d:].reshape(K, B, d, d, -1) if order >= 2 else None
        return value, jac, hess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.jet(x, 0)[0]


def skew_from_upper(u: torch.Tensor, dim: int) -> torch.Tensor:
    """Skew-symmetric matrices (..., dim, dim) from their upper triangles (..., dim(dim-1)/2),
    row by row: A_ij = u, A_ji = -u for i < j."""
    rows, cols = torch.triu_indices(dim, dim, 1, device=u.device)
    a = u.new_zeros(*u.shape[:-1], dim, dim)
    a[..., rows, cols] = u
    return a - a.transpose(-1, -2)
