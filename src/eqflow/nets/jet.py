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

    def __init__(
        self,
        dim: int,
        out: int,
        hidden: Sequence[int] = (64, 64),
        activation: str = "silu",
        n_freqs: int = 4,
        members: int = 1,
    ):
        super().__init__()
        if activation not in JET_ACTIVATIONS:
            raise ValueError(
                f"flow.model.activation={activation!r}: the exact flow needs a smooth "
                f"activation with a second derivative; choose one of {JET_ACTIVATIONS}"
            )
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
        # index tables and the skew basis, kept as (non-persistent) buffers so they follow the
        # net's device and dtype and compile as constants
        first, second, diagonal = _pairs(dim)
        self.register_buffer("pair_first", first, persistent=False)
        self.register_buffer("pair_second", second, persistent=False)
        self.register_buffer("pair_diagonal", diagonal, persistent=False)
        self.register_buffer("pair_of_entry", _full_from_pairs(dim), persistent=False)
        self.register_buffer("skew_basis", skew_basis(dim), persistent=False)

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
            state[f"weights.{i}"] = w[k : k + 1].detach().clone()
            state[f"biases.{i}"] = b[k : k + 1].detach().clone()
        return state

    def _first_layer(self, x: torch.Tensor, order: int) -> torch.Tensor:
        """The first linear layer's value and derivatives as rows (K, B, T, H). Each encoded
        feature depends on one coordinate, so d h / d x_k takes only that coordinate's features
        and the Hessian is diagonal in (k, l): no dense encoding Jacobian is formed."""
        K, B, d = x.shape
        w, b = self.weights[0], self.biases[0]
        w_by_coord = w.reshape(K, -1, d, 1 + 2 * self.n_freqs)  # (K, H, d, G)
        f = self.freqs.to(x)
        fx = x.unsqueeze(-1) * f  # (K, B, d, F)
        sin, cos = fx.sin(), fx.cos()
        g = torch.cat([x.unsqueeze(-1), sin, cos], -1)  # (K, B, d, G)
        value = torch.bmm(g.reshape(K, B, -1), w.transpose(1, 2)) + b[:, None]
        rows = [value.unsqueeze(2)]
        if order >= 1:
            g1 = torch.cat([torch.ones_like(x).unsqueeze(-1), f * cos, -f * sin], -1)
            rows.append(torch.einsum("kbcg,khcg->kbch", g1, w_by_coord))
        if order >= 2:
            g2 = torch.cat([torch.zeros_like(x).unsqueeze(-1), -f * f * sin, -f * f * cos], -1)
            diagonal = torch.einsum("kbcg,khcg->kbch", g2, w_by_coord)
            padded = torch.cat([diagonal, torch.zeros_like(diagonal[:, :, :1])], 2)
            rows.append(padded[:, :, self.pair_diagonal])
        return torch.cat(rows, 2)

    def jet(self, x: torch.Tensor, order: int = 0):
        """``(value, jacobian, hessian)`` at ``x`` (K, B, d): value (K, B, m), jacobian
        (K, B, d, m) with [k, i] = d out_i / d x_k, hessian (K, B, d, d, m); those beyond
        ``order`` are None. Inside, the Hessian is kept for pairs k <= l only."""
        if x.ndim != 3 or x.shape[0] != self.members:
            raise ValueError(
                f"JetMLP of {self.members} members needs x of shape "
                f"({self.members}, B, {self.dim}), got {tuple(x.shape)}"
            )
        K, B, d = x.shape
        first, second = self.pair_first, self.pair_second
        h = self._first_layer(x, order)
        for w, b in zip(self.weights[1:], self.biases[1:]):
            s0, s1, s2 = _activation(h[:, :, 0], self.activation)
            rows = [s0.unsqueeze(2)]
            if order >= 1:
                jac = h[:, :, 1 : 1 + d]
                rows.append(s1.unsqueeze(2) * jac)
            if order >= 2:
                rows.append(
                    s2.unsqueeze(2) * jac[:, :, first] * jac[:, :, second]
                    + s1.unsqueeze(2) * h[:, :, 1 + d :]
                )
            t = torch.cat(rows, 2)
            n_rows = t.shape[2]
            h = torch.bmm(t.reshape(K, B * n_rows, -1), w.transpose(1, 2)).reshape(K, B, n_rows, -1)
            h[:, :, 0] += b[:, None]  # the bias moves the value, not its derivatives
        value = h[:, :, 0]
        jac = h[:, :, 1 : 1 + d] if order >= 1 else None
        hess = None
        if order >= 2:
            hess = h[:, :, 1 + d :][:, :, self.pair_of_entry].reshape(K, B, d, d, -1)
        return value, jac, hess

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.jet(x, 0)[0]

    def skew(self, u: torch.Tensor) -> torch.Tensor:
        """Skew matrices (..., d, d) from upper triangles (..., d(d-1)/2): see
        :func:`skew_from_upper`."""
        return (u @ self.skew_basis.to(u.dtype)).reshape(*u.shape[:-1], self.dim, self.dim)


def _pairs(d: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs k <= l (row-major): first indices, second indices, and for each pair the
    diagonal's index k where k = l, else d (a zero row appended after the diagonal)."""
    first, second = torch.triu_indices(d, d, 0)
    return first, second, torch.where(first == second, first, torch.full_like(first, d))


def _full_from_pairs(d: int) -> torch.Tensor:
    """For each (k, l), row-major, the index of the pair (min, max) in :func:`_pairs`' order."""
    first, second, _ = _pairs(d)
    index = torch.empty(d, d, dtype=torch.long)
    index[first, second] = torch.arange(len(first))
    index[second, first] = torch.arange(len(first))
    return index.flatten()


def skew_basis(dim: int) -> torch.Tensor:
    """(dim(dim-1)/2, dim * dim): row p maps the p-th upper-triangle entry (row by row) to
    A_ij = +1 and A_ji = -1, so ``u @ skew_basis`` is A flattened (a product, not an index
    assignment: it compiles and differentiates cleanly)."""
    rows, cols = torch.triu_indices(dim, dim, 1)
    basis = torch.zeros(len(rows), dim * dim)
    basis[torch.arange(len(rows)), rows * dim + cols] = 1.0
    basis[torch.arange(len(rows)), cols * dim + rows] = -1.0
    return basis


def skew_from_upper(u: torch.Tensor, dim: int) -> torch.Tensor:
    """Skew-symmetric matrices (..., dim, dim) from their upper triangles (..., dim(dim-1)/2),
    row by row: A_ij = u, A_ji = -u for i < j."""
    return (u @ skew_basis(dim).to(u)).reshape(*u.shape[:-1], dim, dim)
