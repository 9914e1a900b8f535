import os

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
# two threads (the CI machine's cores), one per worker under pytest-xdist (-n 2); fewer when the
# suite shares the machine with a run
_THREADS = "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2"
torch.set_num_threads(int(os.environ.get("EQFLOW_TEST_THREADS", _THREADS)))


class GaussianMixture:
    """A mixture of isotropic Gaussians with its exact score (for closed-form checks)."""

    def __init__(self, means, std):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.std = std

    def sample(self, n, generator):
        idx = torch.randint(len(self.means), (n,), generator=generator)
        noise = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[idx] + self.std * noise

    def log_prob(self, x):
        d2 = ((x[:, None, :] - self.means.to(x)[None]) ** 2).sum(-1)
        return torch.logsumexp(-d2 / (2 * self.std**2), dim=1)  # up to a constant

    def score(self, x):
        d = x[:, None, :] - self.means.to(x)[None]
        w = torch.softmax(-(d**2).sum(-1) / (2 * self.std**2), dim=1)
        return -(w[..., None] * d).sum(1) / self.std**2


@pytest.fixture
def mixture():
    return GaussianMixture([[-1.0, -1.0], [1.0, 1.0], [1.5, -1.0]], 0.5)
