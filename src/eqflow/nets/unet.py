"""The image score network: diffusers' ``UNet2DModel`` on a periodic domain (as the paper's
image score model).

Every convolution with a kernel larger than 1 and non-zero padding pads circularly. The
subclass re-applies this in its constructor, so any way of rebuilding it keeps it: our own
checkpoints (built from hyper-parameters), ``copy.deepcopy`` and diffusers'
``save_pretrained`` / ``CircularUNet2DModel.from_pretrained``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
from diffusers import UNet2DModel


def make_circular(module: torch.nn.Module) -> torch.nn.Module:
    """Switch every padded convolution with a kernel > 1 to circular padding (in place)."""
    for m in module.modules():
        if (
            isinstance(m, torch.nn.Conv2d)
            and max(m.kernel_size) > 1
            and any(p > 0 for p in m.padding)
        ):
            m.padding_mode = "circular"  # nn.Conv2d then pads explicitly, by its own padding
    return module


def padding_modes(module: torch.nn.Module) -> set[str]:
    """The padding modes of the padded convolutions with a kernel > 1 (for checks and tests)."""
    return {
        m.padding_mode
        for m in module.modules()
        if isinstance(m, torch.nn.Conv2d)
        and max(m.kernel_size) > 1
        and any(p > 0 for p in m.padding)
    }


class CircularUNet2DModel(UNet2DModel):
    """``UNet2DModel`` whose padded convolutions pad circularly (a periodic domain)."""

    # diffusers reads the config keys from the signature: present the parent's
    @functools.wraps(UNet2DModel.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        make_circular(self)


def circular_unet(
    channels: int,
    block_out_channels: Sequence[int] = (16, 32, 64),
    layers_per_block: int = 2,
    norm_num_groups: int = 8,
) -> CircularUNet2DModel:
    """The published architecture: plain Down/Up blocks (no attention), one per width."""
    widths = tuple(int(w) for w in block_out_channels)
    bad = [w for w in widths if w % norm_num_groups]
    if bad:
        raise ValueError(
            f"score.model.block_out_channels {list(widths)} must all be multiples of "
            f"score.model.norm_num_groups={norm_num_groups}"
        )
    return CircularUNet2DModel(
        in_channels=channels,
        out_channels=channels,
        block_out_channels=widths,
        down_block_types=("DownBlock2D",) * len(widths),
        up_block_types=("UpBlock2D",) * len(widths),
        layers_per_block=layers_per_block,
        norm_num_groups=norm_num_groups,
    )
