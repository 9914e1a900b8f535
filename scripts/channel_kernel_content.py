"""How much of a channel skew kernel's field moves the clean content, for every seed's kernel
and for the best kernel there is: ``python scripts/channel_kernel_content.py RUN_DIR
[--cache-dir DIR] [--seeds 8]`` on a finished alife run (its score model from the cache).

v = D s with a 1 x 1 (channel) skew D of unit Frobenius norm is linear in D's C (C - 1) / 2
entries theta, and so is the clean content's motion along it (Tweedie's x0_hat differentiated
along v, :func:`eqflow.models.exact_local.content_motion`). On the run's first 32 training
scatters noised to the score's level (the images ``creatures/flow_content_share`` is read on),
content motion squared is theta^T U theta and |v|^2 theta^T W theta, with U and W from one
Jacobian product per basis kernel. Prints each seed's kernel (``flow.model.seed``) with its
content share and content motion, and the kernels that maximise each: the top eigenvector of
U (content motion at unit norm) and the top generalised eigenvector of (U, W) (share)."""

import argparse
from pathlib import Path

import scipy.linalg
import torch

from eqflow.dynamics.skew import skew_kernel
from eqflow.models.exact_local import content_motion
from eqflow.models.score import noise_to_level
from eqflow.protocols.creatures import REFERENCE_SEED, TRANSLATION_IMAGES
from eqflow.runs import load_run


def basis(channels: int) -> list[torch.Tensor]:
    """Unit-Frobenius skew basis kernels (C, C), one per channel pair."""
    out = []
    for i in range(channels):
        for j in range(i + 1, channels):
            m = torch.zeros(channels, channels, dtype=torch.float64)
            m[i, j], m[j, i] = 1.0, -1.0
            out.append(m / m.norm())
    return out


def gram(vectors: list[torch.Tensor]) -> torch.Tensor:
    return torch.tensor(
        [[float((u.double() * v.double()).sum()) for v in vectors] for u in vectors],
        dtype=torch.float64,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--seeds", type=int, default=8)
    args = parser.parse_args()
    run = load_run(args.run, args.cache_dir)
    flow, model = run.flow, run.flow.score_model
    g = torch.Generator().manual_seed(REFERENCE_SEED)
    x = noise_to_level(run.data.x[:TRANSLATION_IMAGES].float().cpu(), model.alpha.cpu(), g)
    x = x.to(flow.device)
    model.allow_second_derivatives()
    with torch.no_grad():
        s = flow.score(x)
    kernels = basis(s.shape[1])
    fields = [torch.einsum("ij,bjhw->bihw", k.to(s), s) for k in kernels]
    moved = [content_motion(flow.score, x, w, float(model.alpha)).detach() for w in fields]
    U, W = gram(moved), gram(fields)

    def row(name: str, theta: torch.Tensor) -> None:
        theta = theta / theta.norm()
        content, v2 = float(theta @ U @ theta), float(theta @ W @ theta)
        print(f"{name}\t{content / v2:.4f}\t{content:.4g}\t{v2:.4g}")

    print("kernel\tcontent share\tcontent motion^2\t|v|^2")
    for seed in range(args.seeds):
        D = skew_kernel(s.shape[1], 0, torch.Generator().manual_seed(seed))[:, :, 0, 0].double()
        row(f"seed {seed}", torch.stack([(D * k).sum() for k in kernels]))
    row("most content motion", torch.linalg.eigh(U).eigenvectors[:, -1])
    row("highest share", torch.from_numpy(scipy.linalg.eigh(U.numpy(), W.numpy())[1][:, -1]))


if __name__ == "__main__":
    main()
