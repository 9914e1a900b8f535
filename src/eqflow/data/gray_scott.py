"""The Gray-Scott reaction-diffusion system (docs/method.md §5): a vectorised simulator on a
periodic grid whose right-hand side is the ground-truth field of the Turing-pattern data.

    du/dt = Du lap(u) - u v^2 + F (1 - u)
    dv/dt = Dv lap(v) + u v^2 - (F + k) v

State: (batch, 2, H, W) with channel 0 = u, 1 = v, in [0, 1]. Explicit Euler with dt = 1 and
clamping to [0, 1] after every step, a periodic 5-point Laplacian.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eqflow.data.base import Snapshots, SnapshotSystem, check_data_settings

PRESETS: dict[str, tuple[float, float]] = {  # (F, k), docs/method.md §5
    "life": (0.006, 0.045),
    "waves": (0.018, 0.049),
    "spirals": (0.007, 0.028),
    "maze": (0.029, 0.057),
}


def laplacian(x: torch.Tensor) -> torch.Tensor:
    """Periodic 5-point Laplacian over the last two dimensions (grid spacing 1)."""
    return (
        torch.roll(x, 1, -1)
        + torch.roll(x, -1, -1)
        + torch.roll(x, 1, -2)
        + torch.roll(x, -1, -2)
        - 4 * x
    )


@dataclass(frozen=True)
class GrayScott:
    """The Gray-Scott field for one (F, k); call it on (B, 2, H, W) states."""

    feed: float
    kill: float
    du: float = 0.16
    dv: float = 0.08

    @classmethod
    def preset(cls, name: str, **kw) -> "GrayScott":
        if name not in PRESETS:
            raise ValueError(
                f"unknown Gray-Scott preset {name!r}; choose one of {sorted(PRESETS)} "
                f"or give feed= and kill= directly"
            )
        f, k = PRESETS[name]
        return cls(f, k, **kw)

    def __call__(self, state: torch.Tensor) -> torch.Tensor:
        u, v = state[:, 0], state[:, 1]
        uvv = u * v * v
        du = self.du * laplacian(u) - uvv + self.feed * (1 - u)
        dv = self.dv * laplacian(v) + uvv - (self.feed + self.kill) * v
        return torch.stack([du, dv], 1)

    def step(self, state: torch.Tensor, dt: float = 1.0) -> torch.Tensor:
        """One explicit Euler step, clamped to [0, 1]."""
        return (state + dt * self(state)).clamp_(0.0, 1.0)

    def simulate(
        self, state: torch.Tensor, steps: int, dt: float = 1.0, progress: bool = False
    ) -> torch.Tensor:
        from tqdm.auto import trange

        state = state.clone()
        for _ in trange(steps, disable=not progress, desc="Gray-Scott", leave=False):
            state = self.step(state, dt)
        return state


def initial_state(
    batch: int,
    size: int,
    generator: torch.Generator,
    n_discs: int = 5,
    radius: tuple[int, int] = (3, 7),
    dtype=torch.float32,
) -> torch.Tensor:
    """u = 1, v = 0, then ``n_discs`` discs (radius drawn in ``radius``, random centres, wrapping
    around the periodic edges) set to u = 0.5, v = 0.25."""
    state = torch.zeros(batch, 2, size, size, dtype=dtype)
    state[:, 0] = 1.0
    coords = torch.arange(size, dtype=torch.float64)
    for b in range(batch):
        centres = torch.randint(0, size, (n_discs, 2), generator=generator).double()
        radii = torch.randint(radius[0], radius[1] + 1, (n_discs,), generator=generator).double()
        mask = torch.zeros(size, size, dtype=torch.bool)
        for (cy, cx), r in zip(centres, radii):
            dy = (coords - cy).abs()
            dx = (coords - cx).abs()
            dy, dx = torch.minimum(dy, size - dy), torch.minimum(dx, size - dx)  # periodic
            mask |= (dy[:, None] ** 2 + dx[None, :] ** 2) <= r * r
        state[b, 0][mask] = 0.5
        state[b, 1][mask] = 0.25
    return state


class GrayScottSystem(SnapshotSystem):
    """Turing-pattern snapshots: ``n_samples`` independent simulations of ``steps`` Euler steps
    from the published random-disc start, stored as 2 channels scaled to [-1, 1] (x = 2 s - 1).

    The ground truth is the Gray-Scott field in those coordinates. Generation is cached on disk
    (``cache_data``) by a hash of every setting; ``chunk`` simulations run as one batch, on
    ``device`` (``auto``: the GPU when there is one; the initial discs are always drawn on the CPU).
    """

    cache_data = True

    def __init__(
        self,
        preset: str | None = "waves",
        feed: float | None = None,
        kill: float | None = None,
        du: float = 0.16,
        dv: float = 0.08,
        size: int = 64,
        n_samples: int = 1024,
        steps: int = 5000,
        dt: float = 1.0,
        chunk: int = 256,
        progress: bool = True,
        device: str = "auto",
    ):
        if (feed is None) != (kill is None):
            raise ValueError("data.feed and data.kill go together; set both or neither")
        if feed is None:
            self.field = GrayScott.preset(preset, du=du, dv=dv)
        else:
            self.field = GrayScott(feed, kill, du, dv)
        check_data_settings(size=size, n_samples=n_samples, steps=steps, chunk=chunk)
        self.size, self.n_samples, self.steps, self.dt = size, n_samples, steps, dt
        self.chunk, self.progress = chunk, progress
        self.device = (
            ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        )
        self.dim = 2 * size * size

    def generate(self, generator: torch.Generator):
        from tqdm.auto import tqdm

        out = []
        bar = tqdm(total=self.n_samples, desc="Gray-Scott samples", disable=not self.progress)
        for start in range(0, self.n_samples, self.chunk):
            n = min(self.chunk, self.n_samples - start)
            state = initial_state(n, self.size, generator).to(self.device)
            out.append(self.field.simulate(state, self.steps, self.dt).cpu())
            bar.update(n)
        bar.close()
        raw = torch.cat(out)
        return Snapshots(2 * raw - 1, torch.tensor(0.5), torch.tensor(0.5))

    def true_field(self, snapshots):
        shift, scale = snapshots.shift, snapshots.scale

        def field(z: torch.Tensor) -> torch.Tensor:
            return self.field(z * scale.to(z) + shift.to(z)) / scale.to(z)

        return field

    def simulator(self, snapshots):
        """``step(x, n)``: ``n`` simulator steps from states ``x`` in the snapshots' coordinates."""
        shift, scale = snapshots.shift, snapshots.scale

        def step(z: torch.Tensor, n: int) -> torch.Tensor:
            raw = self.field.simulate(z * scale.to(z) + shift.to(z), n, self.dt)
            return (raw - shift.to(z)) / scale.to(z)

        return step
