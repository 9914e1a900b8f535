import math

import pytest
import torch

from eqflow.models.schedules import CosineSchedule
from eqflow.models.score import ScoreModule, score_from_prediction


def test_published_cosine_schedule_values():
    s = CosineSchedule(100)
    a = lambda t: float(s.alpha_bar[s.index(t)])  # noqa: E731
    assert a(0.1) == pytest.approx(0.979, abs=1e-3)
    assert a(0.2) == pytest.approx(0.911, abs=1e-3)
    assert s.index(0.2) == math.floor(0.2 * 99)
    assert (s.alpha_bar[1:] <= s.alpha_bar[:-1]).all()  # noise grows with t


def test_eps_and_v_predictions_give_the_exact_score_of_a_gaussian():
    # data N(0, sigma^2) noised to level a is N(0, a sigma^2 + 1 - a); its score is known
    sigma, a = 0.7, torch.tensor(0.8, dtype=torch.float64)
    var = a * sigma**2 + 1 - a
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)[:, None]
    exact = -x / var
    # the ideal predictions: E[eps | x] and E[v | x] under this Gaussian
    eps_hat = torch.sqrt(1 - a) * x / var
    x0_hat = torch.sqrt(a) * sigma**2 * x / var
    v_hat = (torch.sqrt(a) * x - x0_hat) / torch.sqrt(1 - a)  # from x = sqrt(a) x0_hat + ... and v
    torch.testing.assert_close(score_from_prediction(eps_hat, x, a, "eps"), exact)
    torch.testing.assert_close(score_from_prediction(v_hat, x, a, "v"), exact)
    with pytest.raises(ValueError, match="prediction"):
        score_from_prediction(eps_hat, x, a, "x0")


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_score_module_learns_a_gaussian_score(prediction):
    torch.manual_seed(0)
    model = ScoreModule(dim=2, prediction=prediction, t=0.2, lr=1e-2)
    opt = model.configure_optimizers()
    opt = (
        opt["optimizer"]
        if isinstance(opt, dict)
        else (opt[0][0] if isinstance(opt, tuple) else opt)
    )
    model.log = lambda *a, **k: None
    data = 0.5 * torch.randn(4096, 2)
    for step in range(400):
        loss = model.training_step(data[torch.randint(0, 4096, (512,))], step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    a = model.alpha
    x = model.noise(0.5 * torch.randn(2000, 2))
    exact = -x / (a * 0.25 + 1 - a)
    with torch.no_grad():
        s = model.score(x)
    cos = torch.nn.functional.cosine_similarity(s, exact, dim=1).mean()
    assert cos > 0.95
    assert (s.norm(dim=1).mean() / exact.norm(dim=1).mean() - 1).abs() < 0.2
