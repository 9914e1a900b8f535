"""Draw examples/icons/fish.png, an icon of one's own for `icon=examples/icons/fish.png`: an
asymmetric fish (a blue body, an orange tail fin on one end, a dark eye near the other) on a
transparent background. Any RGBA PNG whose alpha marks the creature works the same way."""

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64
y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float)
y, x = (y - (SIZE - 1) / 2) / (SIZE / 2), (x - (SIZE - 1) / 2) / (SIZE / 2)
rgba = np.zeros((SIZE, SIZE, 4))


def paint(mask, rgb):
    rgba[mask, :3] = rgb
    rgba[mask, 3] = 1.0


paint(((x + 0.05) / 0.6) ** 2 + (y / 0.32) ** 2 <= 1, (0.1, 0.35, 0.8))  # body
paint((x > 0.45) & (x < 0.95) & (np.abs(y) < (x - 0.45) * 0.9), (1.0, 0.55, 0.1))  # tail fin
paint(((x + 0.1) / 0.3) ** 2 + ((y - 0.28) / 0.12) ** 2 <= 1, (0.55, 0.8, 1.0))  # belly stripe
paint(((x + 0.42) / 0.08) ** 2 + ((y + 0.08) / 0.08) ** 2 <= 1, (0.05, 0.05, 0.05))  # eye
Image.fromarray((rgba * 255).round().astype(np.uint8), "RGBA").save(
    Path(__file__).with_name("fish.png")
)
