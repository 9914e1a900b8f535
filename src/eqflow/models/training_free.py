"""Training-free equilibrium flows v = D s with a constant skew-symmetric D (docs/method.md §2)."""

from __future__ import annotations

import torch

from eqflow.dynamics.skew import circular_conv, gamma_kernel, skew_kernel
from eqflow.models.flow import FlowBase


class TrainingFreeFlow(FlowBase):
    """``v = D s`` with a constant skew-symmetric D of unit Frobenius norm (docs/method.md §2).

    On vectors (B, d), D is a matrix; on images (B, C, H, W) (``spatial=True``), a convolution
    with circular padding whose kernel satisfies K[i, j, u, w] = -K[j, i, -u, -w]. ``kernel``:
    ``random`` (drawn from ``seed``; ``radius`` sets the spatial extent on images) or ``gamma``
    (the paper's gamma [[0, 1], [-1, 0]], two channels). It satisfies div(p v) = 0 exactly for
    the model's p; ``eta`` is the Langevin strength when it is run as the irreversible SDE
    ``dx = (v + eta s) dt + sqrt(2 eta) dW``.
    """

    trainable = False
    images = True
    KERNELS = ("random", "gamma")

    def __init__(
        self,
        score,
        dim: int,
        seed: int = 0,
        eta: float = 0.1,
        kernel: str = "random",
        radius: int = 0,
        gamma: float = 1.0,
        spatial: bool = False,
    ):
        super().__init__(score)
        if kernel not in self.KERNELS:
            raise ValueError(f"flow.model.kernel={kernel!r}: choose one of {self.KERNELS}")
        if kernel == "gamma" and dim != 2:
            raise ValueError(
                f"flow.model.kernel=gamma is the two-channel kernel of the paper; the "
                f"data has {dim} channels, use flow.model.kernel=random"
            )
        if radius < 0 or (radius and not spatial):
            raise ValueError(
                f"flow.model.radius={radius}: a spatial radius >= 0 applies to image "
                f"data only; use 0 for vectors"
            )
        self.save_hyperparameters(ignore=["score"])
        generator = torch.Generator().manual_seed(int(seed))
        if kernel == "gamma":
            weight = gamma_kernel(gamma)
        else:
            weight = skew_kernel(dim, radius, generator)
        self.register_buffer("D", weight if spatial else weight[:, :, 0, 0].contiguous())

    def velocity(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply_D(self.score(x))

    def drift(self, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.apply_D(s)

    def apply_D(self, s: torch.Tensor) -> torch.Tensor:
        """D applied to scores ``s``: the flow's velocity wherever ``s`` was evaluated."""
        if self.hparams.spatial:
            return circular_conv(s, self.D)
        return s @ self.D.T.to(s)

    def training_step(self, batch, batch_idx):
        raise RuntimeError(
            "a training-free flow has nothing to train; measure it directly "
            "(eqflow.pipeline.train skips the fit for it)"
        )

    def configure_optimizers(self):
        return None
