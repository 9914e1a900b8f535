"""A 2-D UMAP embedding of flow representations (cosine metric)."""

from __future__ import annotations

import numpy as np
import torch


def umap_embedding(
    reps: torch.Tensor, n_neighbors: int = 15, metric: str = "cosine", seed: int = 0
) -> np.ndarray:
    """Embed the rows of ``reps`` (n, D) in 2-D with UMAP; ``n_neighbors`` is capped at n - 1.

    Needs at least 4 rows (UMAP's spectral start needs a few more points than components).
    """
    import umap  # slow to import (numba); only here

    x = reps.detach().double().cpu().numpy()
    if len(x) < 4:
        raise ValueError(f"UMAP needs at least 4 representations, got {len(x)}")
    reducer = umap.UMAP(
        n_neighbors=min(n_neighbors, len(x) - 1),
        n_components=2,
        metric=metric,
        random_state=seed,
        init="spectral" if len(x) > 8 else "random",
    )
    return reducer.fit_transform(x)
