"""The start patterns of the Table 2 protocol: patterns with spatial structure, drawn without
replacement."""

from __future__ import annotations

import torch


class StartPatterns:
    """Start patterns drawn one at a time, without replacement, from those of ``x`` (N, C, H, W)
    with spatial structure (std > ``min_std``): ``draw()`` -> (1, C, H, W)."""

    def __init__(self, x: torch.Tensor, generator: torch.Generator, min_std: float = 0.02):
        self.x, self.generator = x, generator
        self.alive = (x.flatten(2).std(-1).amax(-1) > min_std).nonzero().flatten().tolist()
        if not self.alive:
            raise ValueError(
                f"every pattern is flat (std <= {min_std}); the simulation died out. "
                f"Use a larger data.size or fewer data.steps"
            )
        self.n_alive = len(self.alive)

    def draw(self) -> torch.Tensor:
        if not self.alive:
            raise ValueError(
                f"more start patterns asked for than the {self.n_alive} patterns with "
                f"structure; lower callbacks.patterns.n_starts or raise data.n_samples"
            )
        i = self.alive.pop(int(torch.randint(len(self.alive), (1,), generator=self.generator)))
        return self.x[i : i + 1]


def pick_patterns(
    x: torch.Tensor, n: int, generator: torch.Generator, min_std: float = 0.02
) -> torch.Tensor:
    """``n`` different patterns (n, C, H, W) with structure (see :class:`StartPatterns`)."""
    pool = StartPatterns(x, generator, min_std)
    return torch.cat([pool.draw() for _ in range(n)])


def pick_pattern(
    x: torch.Tensor, generator: torch.Generator, min_std: float = 0.02
) -> torch.Tensor:
    """One pattern (1, C, H, W) drawn from those with spatial structure (std > ``min_std``)."""
    return pick_patterns(x, 1, generator, min_std)
