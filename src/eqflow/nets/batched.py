"""K networks of one architecture as one module: every weight carries a leading member axis, so
a forward pass on (K, B, d) is a few batched matrix products instead of K small ones."""

from __future__ import annotations

import torch
from torch import nn

from eqflow.nets.mlp import FlowMLP, NormalisedField, PositionalEncoding
from eqflow.nets.norm import NonAffineBatchNorm


class BatchedLinear(nn.Module):
    """K linear maps: (K, B, in) -> (K, B, out) with weight (K, out, in) and bias (K, out)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias.unsqueeze(1), x, self.weight.transpose(1, 2))


class BatchedFlowMLP(NormalisedField):
    """K :class:`FlowMLP` (same architecture) stacked: ``pre_norm``, ``forward`` and
    ``with_running_stats`` take (K, B, d) and give member k's field on row k. ``member(k)``
    writes member k back into a plain FlowMLP's state dict."""

    def __init__(self, nets: list[FlowMLP]):
        super().__init__()
        first = nets[0]
        self.members = len(nets)
        self.encoding = PositionalEncoding(first.encoding.n_freqs)
        layers: list[nn.Module] = []
        for i, layer in enumerate(first.net):
            if isinstance(layer, nn.Linear):
                layers.append(
                    BatchedLinear(
                        torch.stack([n.net[i].weight.detach() for n in nets]).clone(),
                        torch.stack([n.net[i].bias.detach() for n in nets]).clone(),
                    )
                )
            else:
                layers.append(type(layer)())
        self.net = nn.Sequential(*layers)
        dim = first.norm.running_mean.shape[-1]
        self.norm = NonAffineBatchNorm(dim, first.norm.momentum, first.norm.eps, members=len(nets))
        with torch.no_grad():
            self.norm.running_mean.copy_(torch.stack([n.norm.running_mean for n in nets])[:, None])
            self.norm.running_var.copy_(torch.stack([n.norm.running_var for n in nets])[:, None])

    def member_state(self, k: int) -> dict[str, torch.Tensor]:
        """Member ``k`` as the state dict of a :class:`FlowMLP`."""
        state = {
            "encoding.freqs": self.encoding.freqs.clone(),
            "norm.running_mean": self.norm.running_mean[k, 0].clone(),
            "norm.running_var": self.norm.running_var[k, 0].clone(),
        }
        for i, layer in enumerate(self.net):
            if isinstance(layer, BatchedLinear):
                state[f"net.{i}.weight"] = layer.weight[k].detach().clone()
                state[f"net.{i}.bias"] = layer.bias[k].detach().clone()
        return state
