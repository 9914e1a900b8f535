import math

import pytest
import torch

from eqflow.data import Lorenz
from eqflow.metrics import aligned_abs_cosine, max_lyapunov, mmd2, paired_mmd2, similarity_table


def test_mmd_basic_properties():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g)
    same = float(mmd2(x, y, 0.5))
    assert abs(same) < 0.01
    torch.testing.assert_close(mmd2(x, y, 0.5), mmd2(y, x, 0.5))
    shifts = [float(mmd2(x, y + s, 0.5)) for s in (0.25, 0.5, 1.0, 2.0)]
    assert shifts == sorted(shifts) and shifts[0] > same
    # unbiased: the average over many independent pairs is ~0 (a biased V-statistic is not)
    vals = torch.stack(
        [mmd2(torch.randn(20, 2, generator=g), torch.randn(20, 2, generator=g)) for _ in range(400)]
    )
    assert abs(vals.mean()) < 3 * vals.std() / 20


def test_mmd_matches_hand_computation():
    x = torch.tensor([[0.0], [1.0]])
    y = torch.tensor([[0.0], [2.0]])
    k = lambda a, b: torch.exp(torch.tensor(-((a - b) ** 2) / 2.0))  # noqa: E731
    expected = k(0, 1) + k(0, 2) - 0.5 * (k(0, 0) + k(0, 2) + k(1, 0) + k(1, 2))
    torch.testing.assert_close(mmd2(x, y, 1.0), expected)


@pytest.mark.slow
def test_lyapunov_of_lorenz_is_0906_within_5_percent():
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(16, 3, generator=g, dtype=torch.float64)
    res = max_lyapunov(Lorenz(), x0, dt=0.01, steps=20_000, burn_in=1_000, generator=g)
    assert res["n_kept"] == 16
    assert abs(res["lyapunov"] - 0.906) < 0.05 * 0.906, res["lyapunov"]


def test_lyapunov_of_linear_stable_system_is_its_leading_eigenvalue():
    a = torch.tensor([[-1.0, 2.0], [-2.0, -1.0]], dtype=torch.float64)  # eigenvalues -1 +- 2i
    res = max_lyapunov(lambda x: x @ a.T, torch.randn(4, 2, dtype=torch.float64), 0.01, 3000)
    assert res["lyapunov"] < 0
    assert abs(res["lyapunov"] + 1.0) < 1e-3


@pytest.mark.slow
@pytest.mark.parametrize("perturbation, renorm_every, burn_in", [(1e-8, 1, 500), (1e-5, 2500, 0)])
def test_lyapunov_is_the_same_under_the_tangent_and_the_published_protocol(
    perturbation, renorm_every, burn_in
):
    # a decaying rotation: the gap of a linear flow scales exactly by exp(-0.2 t), so a finite
    # perturbation pulled back twice (published) and an infinitesimal one pulled back every step
    # must both read -0.2
    a = torch.tensor([[-0.2, 1.0], [-1.0, -0.2]], dtype=torch.float64)
    x0 = torch.randn(4, 2, dtype=torch.float64)
    res = max_lyapunov(
        lambda x: x @ a.T,
        x0,
        0.01,
        5000,
        burn_in,
        renorm_every=renorm_every,
        perturbation=perturbation,
        record_at=2500,
    )
    assert abs(res["lyapunov"] + 0.2) < 1e-6
    assert abs(res["lyapunov_at_record"] + 0.2) < 1e-6


@pytest.mark.slow
def test_lyapunov_of_a_flow_that_comes_to_rest_has_no_speed_normalised_value():
    x0 = torch.randn(4, 2, dtype=torch.float64)
    res = max_lyapunov(lambda x: -x, x0, dt=0.1, steps=5000, burn_in=500)
    assert abs(res["lyapunov"] + 1.0) < 1e-3  # the raw exponent still says: a stable point
    assert res["n_at_rest"] == 4 and res["mean_speed"] < 1e-3
    assert math.isnan(res["lyapunov_speed_normalised"])
    # a rotation keeps its speed: nothing at rest, the normalised exponent is a number (~0)
    rot = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    res = max_lyapunov(lambda x: x @ rot.T, x0, dt=0.1, steps=2000)
    assert res["n_at_rest"] == 0 and abs(res["lyapunov_speed_normalised"]) < 1e-2


def test_lyapunov_drops_escaping_trajectories():
    res = max_lyapunov(lambda x: x, torch.ones(3, 2, dtype=torch.float64), 0.1, 100, bound=4.0)
    assert res["n_kept"] == 0


def test_similarity_table_invariants():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(30, generator=g, dtype=torch.float64)
    groups = {
        "a": torch.randn(4, 30, generator=g, dtype=torch.float64),
        "b": -torch.randn(5, 30, generator=g, dtype=torch.float64),
        "truth": ref[None],
    }
    table = similarity_table(groups, ref)
    assert table[("truth", "truth")] == (1.0, 0.0)
    for p, q in [("a", "b"), ("a", "truth"), ("b", "truth")]:
        assert table[(p, q)] == table[(q, p)]
    manual = [aligned_abs_cosine(groups["a"][i], ref) for i in range(4)]
    assert table[("a", "truth")][0] == pytest.approx(sum(manual) / 4)
    # v and -v are the same flow
    assert aligned_abs_cosine(ref, -ref) == pytest.approx(1.0)


def test_paired_mmd_is_zero_for_identical_sets_and_unbiased():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 2, generator=g, dtype=torch.float64)
    assert float(paired_mmd2(x, x.clone())) == pytest.approx(0.0, abs=1e-12)
    # mmd2 on the same points is biased low by the k(x_i, x_i) terms
    assert float(mmd2(x, x)) < -1e-3
    # i.i.d. pairs of independent draws: mean ~0 over repetitions
    vals = torch.stack(
        [
            paired_mmd2(torch.randn(20, 2, generator=g), torch.randn(20, 2, generator=g))
            for _ in range(400)
        ]
    )
    assert abs(vals.mean()) < 3 * vals.std() / 20
    # a shifted copy: the same value as mmd2 between the set and an independent shifted set
    fresh = torch.randn(200, 2, generator=g, dtype=torch.float64)
    assert float(paired_mmd2(x, x + 1.0)) == pytest.approx(float(mmd2(x, fresh + 1.0)), abs=0.01)
    assert float(paired_mmd2(x, x + 1.0)) > 20 * abs(float(paired_mmd2(x, fresh)))


def test_bootstrap_difference_interval_brackets_the_true_difference():
    from eqflow.metrics.paired import bootstrap_difference_interval

    g = torch.Generator().manual_seed(0)
    a = (torch.randn(40, generator=g) + 1.0).tolist()
    b = torch.randn(40, generator=g).tolist()
    diff, low, high = bootstrap_difference_interval(a, b)
    assert low < diff < high and low > 0.4 and high < 1.6
    same, low, high = bootstrap_difference_interval(b, b)
    assert same == 0 and low < 0 < high


def test_study_verdicts_name_each_claim_and_whether_it_holds():
    from eqflow.analysis.verdicts import study_verdicts

    table = {
        ("learned", "learned"): (0.995, 0.0),
        ("learned", "ground truth"): (0.7, 0.0),
        ("training-free", "ground truth"): (0.2, 0.0),
        ("random", "ground truth"): (0.08, 0.0),
        ("learned", "score"): (0.02, 0.0),
    }
    chaos = {"n": 20, "n_finite": 20, "n_positive": 18, "n_sustained": 5}
    curves = {
        "learned": torch.full((20, 3), 0.01) + 0.001 * torch.randn(20, 3),
        "training-free": torch.full((20, 3), 0.02) + 0.001 * torch.randn(20, 3),
    }
    verdicts = {v["claim"].split(" (")[0]: v["holds"] for v in study_verdicts(table, chaos, curves)}
    assert verdicts["learned-learned |cos| >= 0.99"] is True
    assert verdicts["|cos| to the ground truth >= 0.25 and above training-free and random"] is True
    assert verdicts["learned-score |cos| < 0.05"] is True
    assert verdicts["MMD² at the end no higher than training-free's"] is True
    assert verdicts["at least 95% of the flows with a positive largest exponent"] is False
    curves["learned"] += 0.05  # now clearly higher
    worse = {v["claim"].split(" (")[0]: v["holds"] for v in study_verdicts(table, chaos, curves)}
    assert worse["MMD² at the end no higher than training-free's"] is False


def test_the_continuity_residual_does_not_depend_on_how_its_points_are_chunked(monkeypatch):
    from eqflow.metrics import residual

    g = torch.Generator().manual_seed(0)
    w = torch.randn(6, 6, dtype=torch.float64, generator=g)
    x = torch.randn(300, 6, dtype=torch.float64, generator=g)

    def field(y):
        return torch.tanh(y @ w)

    def score(y):
        return -y

    whole = residual.continuity_residual(field, score, x)
    monkeypatch.setattr(residual, "JACOBIAN_BUDGET", 40)  # one point a chunk
    assert residual.continuity_residual(field, score, x) == whole
    assert whole["relative"] > 0.1  # a field unrelated to the density: far from 0
