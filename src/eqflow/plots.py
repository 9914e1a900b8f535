"""Every figure eqflow draws. Functions take arrays and a path, save a PNG and return the path."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from eqflow.io.storage import atomic_write  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    try:
        atomic_write(
            path,
            lambda f: fig.savefig(
                f, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight"
            ),
        )
    finally:
        plt.close(fig)
    return path


def quiver_2d(
    field: Callable[[torch.Tensor], torch.Tensor],
    data: torch.Tensor,
    trajectory: torch.Tensor | None,
    path: str | Path,
    title: str = "",
    grid: int = 25,
) -> Path:
    """Arrows of a 2-D field over the data cloud, with optional trajectories (T, n, 2)."""
    data = data.detach().cpu()
    lo, hi = data.min(0).values - 0.3, data.max(0).values + 0.3
    gx, gy = torch.meshgrid(
        torch.linspace(lo[0], hi[0], grid), torch.linspace(lo[1], hi[1], grid), indexing="xy"
    )
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)
    with torch.no_grad():
        v = field(pts).cpu()
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.scatter(data[:, 0], data[:, 1], s=2, alpha=0.25, color="tab:gray", label="data")
    ax.quiver(pts[:, 0], pts[:, 1], v[:, 0], v[:, 1], color="tab:blue", angles="xy")
    if trajectory is not None:
        traj = trajectory.detach().cpu().numpy()
        for i in range(traj.shape[1]):
            ax.plot(traj[:, i, 0], traj[:, i, 1], lw=1.2, color="tab:red", alpha=0.8)
        ax.scatter(traj[0, :, 0], traj[0, :, 1], color="tab:red", s=12, zorder=3, label="start")
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right")
    return _save(fig, path)


def trajectory_3d(
    trajectory: torch.Tensor, data: torch.Tensor, path: str | Path, title: str = ""
) -> Path:
    """3-D trajectories (T, n, 3) over a faint data cloud."""
    traj = trajectory.detach().cpu().numpy()
    pts = data.detach().cpu().numpy()[:4000]
    fig = plt.figure(figsize=(7, 6))
    ax = fig.add_subplot(projection="3d")
    ax.scatter(pts[:, 0], pts[:, 1], pts[:, 2], s=1, alpha=0.1, color="tab:gray")
    for i in range(traj.shape[1]):
        ax.plot(traj[:, i, 0], traj[:, i, 1], traj[:, i, 2], lw=0.8)
    ax.set_title(title)
    return _save(fig, path)


def pair_plot(
    trajectory: torch.Tensor,
    data: torch.Tensor,
    path: str | Path,
    title: str = "",
    names: Sequence[str] | None = None,
    max_dims: int = 5,
) -> Path:
    """Trajectories (T, n, d) over the data, one panel per pair of the first ``max_dims``
    coordinates (a corner plot: data densities on the diagonal)."""
    traj = trajectory.detach().cpu().numpy()
    pts = data.detach().cpu().numpy()[:4000]
    k = min(max_dims, pts.shape[1])
    names = list(names or [f"x{i}" for i in range(pts.shape[1])])
    fig, axes = plt.subplots(k, k, figsize=(2.2 * k, 2.2 * k), squeeze=False)
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(pts[:, i], bins=40, color="tab:gray", alpha=0.6)
            else:
                ax.scatter(pts[:, j], pts[:, i], s=1, alpha=0.1, color="tab:gray")
                for n in range(traj.shape[1]):
                    ax.plot(traj[:, n, j], traj[:, n, i], lw=0.8)
            if i == k - 1:
                ax.set_xlabel(names[j])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
    fig.suptitle(title)
    return _save(fig, path)


def curves(
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    xlabel: str,
    ylabel: str,
    title: str = "",
    x: Mapping[str, Sequence[float]] | None = None,
    bands: Mapping[str, Sequence[float]] | None = None,
    logy: bool = False,
) -> Path:
    """Several named curves on one axis, each with an optional +- band."""
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, ys in series.items():
        ys = np.asarray(ys, dtype=float)
        xs = np.asarray(x[name]) if x and name in x else np.arange(len(ys))
        (line,) = ax.plot(xs, ys, label=name)
        if bands and name in bands:
            b = np.asarray(bands[name], dtype=float)
            ax.fill_between(xs, ys - b, ys + b, color=line.get_color(), alpha=0.2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def histogram(
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    xlabel: str,
    bins: int = 20,
    ylabel: str = "flows",
) -> Path:
    """One histogram panel per named series (non-finite values left out)."""
    fig, axes = plt.subplots(1, len(series), figsize=(4.5 * len(series), 3.5), squeeze=False)
    for ax, (name, values) in zip(axes[0], series.items()):
        vals = np.asarray(values, dtype=float)
        vals = vals[np.isfinite(vals)]
        ax.hist(vals, bins=bins, color="tab:blue", alpha=0.8)
        ax.axvline(0.0, color="k", lw=0.8)
        ax.set_xlabel(f"{xlabel} ({name})")
        ax.set_ylabel(ylabel)
    return _save(fig, path)


def embedding(
    points: np.ndarray,
    labels: Sequence[str],
    path: str | Path,
    title: str = "",
    marked: Sequence[str] = (),
) -> Path:
    """A 2-D scatter coloured by label; labels in ``marked`` drawn as large stars."""
    fig, ax = plt.subplots(figsize=(6, 5))
    labels = np.asarray(labels)
    for name in dict.fromkeys(labels):
        sel = labels == name
        big = name in marked
        ax.scatter(
            points[sel, 0],
            points[sel, 1],
            label=name,
            s=220 if big else 18,
            marker="*" if big else "o",
            edgecolors="k" if big else "none",
            zorder=3 if big else 2,
        )
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=8)
    return _save(fig, path)


def _display(img: torch.Tensor, channel: int | None) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> an array for imshow: one channel, or RGB for 3 channels."""
    img = img.detach().cpu().float()
    if channel is None and img.shape[0] == 3:
        return ((img.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy()
    return img[channel if channel is not None else 0].numpy()


def image_grid(
    images: torch.Tensor,
    path: str | Path,
    title: str = "",
    channel: int | None = None,
    columns: int = 4,
) -> Path:
    """A grid of (N, C, H, W) images in [-1, 1]."""
    n = len(images)
    rows = (n + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images):
        ax.imshow(_display(img, channel), cmap="viridis", vmin=-1, vmax=1)
    fig.suptitle(title)
    return _save(fig, path)


def pattern_panels(
    panels: Mapping[str, torch.Tensor], path: str | Path, title: str = "", channel: int | None = 1
) -> Path:
    """Figure 3 layout: named (C, H, W) states side by side (e.g. initial / evolved under the
    flow / evolved under the simulator); entries whose name starts with 'change' are drawn as
    signed differences on their own colour scale."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, img) in zip(axes[0], panels.items()):
        if name.startswith("change"):
            arr = img.detach().cpu()[channel or 0].numpy()
            lim = float(np.abs(arr).max()) or 1.0
            ax.imshow(arr, cmap="RdBu_r", vmin=-lim, vmax=lim)
        else:
            ax.imshow(_display(img, channel), cmap="viridis", vmin=-1, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)


def animation(
    frames: Sequence[torch.Tensor], path: str | Path, channel: int | None = 1, fps: int = 10
) -> Path:
    """A GIF of (C, H, W) frames in [-1, 1] (one channel through viridis, or RGB)."""
    from PIL import Image

    cmap = matplotlib.colormaps["viridis"]
    images = []
    for frame in frames:
        arr = _display(frame, channel)
        if arr.ndim == 2:
            arr = cmap(np.clip((arr + 1) / 2, 0, 1))[..., :3]
        images.append(Image.fromarray((arr * 255).astype(np.uint8)))
    path = write_gif(images, path, fps)
    return path


def creature_strip(
    icon: np.ndarray,
    frame: np.ndarray,
    centres: np.ndarray,
    path: str | Path,
    title: str = "",
    most: int = 12,
) -> Path:
    """The icon, then up to ``most`` whole creatures cut out of an (H, W, 3) frame in [0, 1]
    around their (row, col) centres (periodic), each in a square of the icon's diagonal."""
    h, w = icon.shape[:2]
    side = int(np.ceil(np.hypot(h, w)))
    picks = centres[:most]
    fig, axes = plt.subplots(
        1, len(picks) + 1, figsize=(1.6 * (len(picks) + 1), 1.9), squeeze=False
    )
    axes = axes[0]
    axes[0].imshow(icon[..., :3] * icon[..., 3:] + (1 - icon[..., 3:]))
    axes[0].set_title("icon", fontsize=8)
    for ax, (r, c) in zip(axes[1:], picks):
        rows = (int(round(r)) - side // 2 + np.arange(side)) % frame.shape[0]
        cols = (int(round(c)) - side // 2 + np.arange(side)) % frame.shape[1]
        ax.imshow(np.clip(frame[np.ix_(rows, cols)], 0, 1))
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def _rgb_uint8(frame: torch.Tensor | np.ndarray) -> np.ndarray:
    arr = frame.detach().cpu().numpy() if isinstance(frame, torch.Tensor) else np.asarray(frame)
    if arr.shape[0] == 3:  # (3, H, W) in [-1, 1]
        arr = (arr.transpose(1, 2, 0) + 1) / 2
    return (np.clip(arr, 0, 1) * 255).astype(np.uint8)


def tracked_animation(
    frames: Sequence, tracks: Sequence, path: str | Path, fps: int = 15, scale: int = 3
) -> list[Path]:
    """A GIF and an MP4 of RGB frames with each track's path so far drawn over them.
    ``tracks``: objects with ``start`` and ``positions`` [(row, col), ...]."""
    from PIL import Image, ImageDraw

    colours = [tuple(int(255 * c) for c in plt.cm.tab10(i)[:3]) for i in range(10)]
    images = []
    for t, frame in enumerate(frames):
        img = Image.fromarray(_rgb_uint8(frame)).resize(
            (scale * frame.shape[-1], scale * frame.shape[-2]), Image.Resampling.NEAREST
        )
        draw = ImageDraw.Draw(img)
        h, w = frame.shape[-2] * scale, frame.shape[-1] * scale
        for i, track in enumerate(tracks):
            upto = t - track.start + 1
            if upto < 2:
                continue
            pts = [(c * scale, r * scale) for r, c in track.positions[:upto]]
            for a, b in zip(pts[:-1], pts[1:]):
                if abs(a[0] - b[0]) < w / 2 and abs(a[1] - b[1]) < h / 2:  # skip edge wraps
                    draw.line([a, b], fill=colours[i % 10], width=2)
        images.append(img)
    path = write_gif(images, path, fps)
    return [path, write_mp4(images, path.with_suffix(".mp4"), fps)]


def write_gif(images: Sequence, path, fps: int) -> Path:
    """A looping GIF of PIL images, written atomically."""
    path = Path(path)
    atomic_write(
        path,
        lambda f: images[0].save(
            f,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=int(1000 / fps),
            loop=0,
        ),
    )
    return path


def write_mp4(images: Sequence, path: Path, fps: int) -> Path:
    """An H.264 MP4 of PIL images through imageio's ffmpeg (imageio-ffmpeg ships the encoder, so
    no system ffmpeg is needed); written to a temporary file and renamed."""
    import imageio.v2 as imageio

    tmp = path.with_name(f".{path.name}.tmp.mp4")
    try:
        with imageio.get_writer(
            tmp, fps=fps, codec="libx264", macro_block_size=2, ffmpeg_log_level="error"
        ) as writer:
            for img in images:
                writer.append_data(np.asarray(img.convert("RGB")))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def creatures_figure(
    icon: np.ndarray | None,
    sample: torch.Tensor,
    frames: Sequence,
    tracks: Sequence,
    path: str | Path,
    title: str = "",
) -> Path:
    """Figure 5 layout: the icon, one training scatter, and three simulation frames with the
    tracks drawn up to each frame."""
    picks = [len(frames) // 3, 2 * len(frames) // 3, len(frames) - 1]
    fig, axes = plt.subplots(1, 5, figsize=(16, 3.6))
    if icon is None:  # scatters read from files: no icon to show
        axes[0].axis("off")
        axes[0].set_title("no icon (images from files)", fontsize=9)
    else:
        axes[0].imshow(icon[..., :3] * icon[..., 3:] + (1 - icon[..., 3:]))
        axes[0].set_title("icon", fontsize=9)
    axes[1].imshow(_rgb_uint8(sample))
    axes[1].set_title("a training scatter", fontsize=9)
    for ax, t in zip(axes[2:], picks):
        frame = frames[t]
        ax.imshow(_rgb_uint8(frame))
        h, w = frame.shape[-2:]
        for i, track in enumerate(tracks):
            pts = np.asarray(track.positions[: max(0, t - track.start + 1)])
            if len(pts) < 2:
                continue
            jumps = np.nonzero((np.abs(np.diff(pts, axis=0)) > [h / 2, w / 2]).any(1))[0] + 1
            for seg in np.split(pts, jumps):
                ax.plot(seg[:, 1], seg[:, 0], lw=1.2, color=plt.cm.tab10(i % 10))
        ax.set_title(f"frame {t}", fontsize=9)
    for ax in axes:
        ax.axis("off")
    fig.suptitle(title)
    return _save(fig, path)
