"""Icons for the artificial-life scatters: loading a user's RGBA image with clear errors, and
four built-in icons drawn here (no external images), in the spirit of the paper's.

An icon is a float array (h, w, 4) in [0, 1]: RGB and alpha.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

BUILTIN = ("firefly", "taiji", "dot", "two_dots")


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    c = (size - 1) / 2
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    return (yy - c) / (size / 2), (xx - c) / (size / 2)  # coordinates in [-1, 1]


def _paint(icon: np.ndarray, mask: np.ndarray, rgb) -> None:
    icon[mask, :3] = rgb
    icon[mask, 3] = 1.0


def firefly(size: int = 64) -> np.ndarray:
    """Asymmetric: a dark elongated body, a glowing yellow abdomen at one end, a red head and
    two pale wings on one side only."""
    y, x = _grid(size)
    icon = np.zeros((size, size, 4))
    _paint(icon, ((x + 0.1) / 0.55) ** 2 + (y / 0.22) ** 2 <= 1, (0.15, 0.12, 0.1))  # body
    _paint(
        icon, ((x - 0.18) / 0.38) ** 2 + ((y + 0.32) / 0.16) ** 2 <= 1, (0.75, 0.85, 0.95)
    )  # wing
    _paint(icon, ((x - 0.6) / 0.3) ** 2 + (y / 0.26) ** 2 <= 1, (1.0, 0.85, 0.1))  # glow
    _paint(icon, ((x + 0.72) / 0.15) ** 2 + (y / 0.15) ** 2 <= 1, (0.8, 0.1, 0.1))  # head
    return icon


def taiji(size: int = 64) -> np.ndarray:
    """Two-tone yin-yang: point-symmetric under a half turn with the colours swapped."""
    y, x = _grid(size)
    r = 0.9
    disc = x**2 + y**2 <= r**2
    upper = (x**2 + (y + r / 2) ** 2) <= (r / 2) ** 2
    lower = (x**2 + (y - r / 2) ** 2) <= (r / 2) ** 2
    dark = disc & (((x < 0) & ~upper) | lower)
    dark &= ~((x**2 + (y - r / 2) ** 2) <= (r / 7) ** 2)
    dark |= (x**2 + (y + r / 2) ** 2) <= (r / 7) ** 2
    icon = np.zeros((size, size, 4))
    _paint(icon, disc, (0.95, 0.95, 0.9))
    _paint(icon, dark, (0.1, 0.1, 0.15))
    return icon


def dot(size: int = 64) -> np.ndarray:
    """A single blue dot (fully symmetric)."""
    y, x = _grid(size)
    icon = np.zeros((size, size, 4))
    _paint(icon, x**2 + y**2 <= 0.5**2, (0.1, 0.3, 0.9))
    return icon


def two_dots(size: int = 64) -> np.ndarray:
    """A pair of touching dots of different colours (mirror-symmetric in one axis only)."""
    y, x = _grid(size)
    icon = np.zeros((size, size, 4))
    _paint(icon, (x + 0.42) ** 2 + y**2 <= 0.4**2, (0.9, 0.2, 0.15))
    _paint(icon, (x - 0.42) ** 2 + y**2 <= 0.4**2, (0.1, 0.3, 0.9))
    return icon


def builtin_icon(name: str, size: int = 64) -> np.ndarray:
    drawers = {"firefly": firefly, "taiji": taiji, "dot": dot, "two_dots": two_dots}
    return drawers[name](size)


def load_icon(icon: str, size: int = 64) -> np.ndarray:
    """A built-in icon by name, or an RGBA image file scaled so its longer side is ``size``."""
    if icon in BUILTIN:
        return builtin_icon(icon, size)
    from PIL import Image, UnidentifiedImageError

    path = Path(icon).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"icon={icon}: no such file and not a built-in icon; pass the path "
            f"of an RGBA PNG or one of {', '.join(BUILTIN)}"
        )
    try:
        with Image.open(path) as img:
            img.load()
            mode, has_transparency = img.mode, "transparency" in img.info
            image = img.convert("RGBA")
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(
            f"icon={icon} is not an image PIL can read ({exc}); pass an RGBA PNG"
        ) from exc
    if mode not in ("RGBA", "LA", "PA") and not has_transparency:
        raise ValueError(
            f"icon={icon} has no alpha channel (mode {mode}); the alpha mask marks the "
            f"creature. Save it as an RGBA PNG with a transparent background"
        )
    arr = np.asarray(image, dtype=np.float64) / 255.0
    if arr[..., 3].max() == 0:
        raise ValueError(f"icon={icon} is fully transparent; nothing to place")
    h, w = arr.shape[:2]
    scale = size / max(h, w)
    if scale != 1:
        image = image.resize(
            (max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS
        )
        arr = np.asarray(image, dtype=np.float64) / 255.0
    return arr
