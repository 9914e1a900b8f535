"""Exact symmetries of periodic, isotropic pattern data, used to augment image batches."""

from __future__ import annotations

import torch


def periodic_symmetry(
    x: torch.Tensor, generator: torch.Generator | None = None, mirror: bool = True
) -> torch.Tensor:
    """Each (C, H, W) image of the batch rolled by a random periodic shift, then a random
    rotation by a multiple of 90 degrees and, if ``mirror``, a random mirror applied to the batch.

    On a periodic square domain these maps send samples of the distribution to samples of the
    same distribution when the distribution has the symmetry: shifts and rotations hold for
    Gray-Scott patterns and for icons scattered at random angles; mirrors hold for Gray-Scott
    (the equations are mirror-symmetric) but not for scatters of a chiral icon (a mirrored
    firefly or taiji is another icon), so ``mirror=False`` there.
    """
    if x.ndim != 4:
        raise ValueError(f"periodic_symmetry expects (B, C, H, W) images, got {tuple(x.shape)}")
    b, _, h, w = x.shape
    dev = generator.device if generator is not None else "cpu"
    shifts = torch.stack(
        [
            torch.randint(0, h, (b,), generator=generator, device=dev),
            torch.randint(0, w, (b,), generator=generator, device=dev),
        ],
        1,
    ).tolist()
    out = torch.stack([torch.roll(img, (sy, sx), (-2, -1)) for img, (sy, sx) in zip(x, shifts)])
    if h == w:
        k = int(torch.randint(0, 4, (1,), generator=generator, device=dev))
        out = torch.rot90(out, k, (-2, -1))
    if mirror and bool(torch.randint(0, 2, (1,), generator=generator, device=dev)):
        out = out.flip(-1)
    return out
