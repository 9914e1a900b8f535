"""Table 2 from several start patterns: the batched SDE against runs made one trajectory group
at a time (the one-start protocol as it was written before batching), and the paired
statistics on hand-made tables."""

import pytest
import torch

from eqflow.metrics.fidelity import abs_cosine
from eqflow.metrics.paired import bootstrap_mean_interval, paired_comparison
from eqflow.models import ImageScoreModule, TrainingFreeFlow
from eqflow.models.baselines import (
    StackedNetworks,
    matched_norm,
    random_kernel_drift,
    random_kernels,
    redrawn_network,
)
from eqflow.protocols.langevin import langevin_representation
from eqflow.protocols.start_patterns import StartPatterns, pick_patterns
from eqflow.protocols.table2 import pattern_fidelity

SETTINGS = dict(eta=0.1, dt=0.01, steps=9, ema=0.9, ema_until=6, truth_steps=3, n_draws=3)


def tiny_flow() -> TrainingFreeFlow:
    torch.manual_seed(0)
    score = ImageScoreModule(2, block_out_channels=(8, 16, 16), norm_num_groups=4).eval()
    return TrainingFreeFlow(score, 2, seed=3, kernel="gamma", spatial=True).eval()


def simulator(x: torch.Tensor, n: int) -> torch.Tensor:
    """A stand-in simulator: a shift-and-blend map, moved ``n`` times."""
    for _ in range(n):
        x = 0.9 * x + 0.1 * torch.roll(x, 1, dims=-1).flip(1)
    return x


def one_start_in_sequence(flow, x0, g, eta, dt, steps, ema, ema_until, truth_steps, n_draws):
    """The one-start protocol as separate SDE runs in the order it draws its randomness:
    +D for ``steps``, -D, the random kernels and their run, the redrawn networks and theirs."""
    truth = simulator(x0, truth_steps) - x0
    kw = dict(eta=eta, dt=dt, ema=ema, ema_until=ema_until, generator=g)
    plus = langevin_representation(lambda x, s: flow.apply_D(s), flow.score, x0, steps=steps, **kw)
    minus = langevin_representation(
        lambda x, s: -flow.apply_D(s), flow.score, x0, steps=ema_until, **kw
    )
    batch = x0.expand(n_draws, *x0.shape[1:]).clone()
    kernels = random_kernels(n_draws, x0.shape[1], g)
    rand = langevin_representation(
        random_kernel_drift(kernels), flow.score, batch, steps=ema_until, **kw
    )
    nets = StackedNetworks([redrawn_network(flow.score_model.network, g) for _ in range(n_draws)])
    rew = langevin_representation(
        matched_norm(lambda x: flow.score_model.score(x, network=nets), x0.shape[1] ** -0.5),
        flow.score,
        batch,
        steps=ema_until,
        **kw,
    )
    cos = lambda rep: abs_cosine(rep, truth).tolist()  # noqa: E731
    return (
        cos(plus.representation)[0],
        cos(minus.representation)[0],
        cos(rand.representation),
        cos(rew.representation),
    )


@pytest.mark.slow
@pytest.mark.parametrize("n_starts,start_batch", [(1, 8), (3, 2)])
def test_batched_table2_equals_the_starts_run_one_trajectory_group_at_a_time(n_starts, start_batch):
    flow = tiny_flow()
    data = torch.randn(12, 2, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        res = pattern_fidelity(
            flow,
            simulator,
            StartPatterns(data, g),
            n_starts=n_starts,
            generator=g,
            start_batch=start_batch,
            frame_every=3,
            **SETTINGS,
        )
        g_ref = torch.Generator().manual_seed(7)
        pool = StartPatterns(data, g_ref)  # each start drawn just before its runs
        expected = [
            one_start_in_sequence(flow, pool.draw(), g_ref, **SETTINGS) for _ in range(n_starts)
        ]
    assert len(res.starts) == n_starts
    for got, (plus, minus, rand, rew) in zip(res.starts, expected):
        assert got.plus == pytest.approx(plus, abs=1e-5)
        assert got.minus == pytest.approx(minus, abs=1e-5)
        assert got.random == pytest.approx(rand, abs=1e-5)
        assert got.reweight == pytest.approx(rew, abs=1e-5)
    # the display run of the first start goes on to `steps`, keeping a frame every 3 steps
    assert len(res.record.frames) == 1 + SETTINGS["steps"] // 3
    summary = res.summary()
    assert summary["table2/n_starts"] == n_starts
    assert len(summary["table2/random_draws"]) == n_starts * SETTINGS["n_draws"]
    if n_starts == 1:  # the published one-start numbers: the better sign of D
        assert summary["table2/training_free"] == max(res.starts[0].plus, res.starts[0].minus)
        assert summary["table2/training_free_std"] == 0.0


def test_the_sign_of_D_is_chosen_once_for_all_starts():
    from eqflow.protocols.langevin import SDERecord
    from eqflow.protocols.table2_results import PatternFidelity, StartFidelity

    starts = [StartFidelity(0.5, 0.1, [0.2], [0.1]), StartFidelity(0.1, 0.3, [0.2], [0.1])]
    res = PatternFidelity(starts, SDERecord(torch.zeros(1), torch.zeros(1)), torch.zeros(1))
    assert res.sign == "+" and res.per_start == [0.5, 0.1]  # not the better sign per start
    assert res.summary()["table2/training_free"] == pytest.approx(0.3)


def test_pick_patterns_draws_different_living_patterns():
    x = torch.zeros(6, 1, 4, 4)
    x[[1, 3, 4]] = torch.randn(3, 1, 4, 4)
    picked = pick_patterns(x, 3, torch.Generator().manual_seed(0))
    assert sorted(float(p.abs().sum()) for p in picked) == sorted(
        float(x[i].abs().sum()) for i in (1, 3, 4)
    )
    with pytest.raises(ValueError, match="than the 3 patterns with structure.*n_starts"):
        pick_patterns(x, 4, torch.Generator())


def test_paired_statistics_on_a_hand_made_table():
    method = [0.30, 0.25, 0.20, 0.35]
    draws = [[0.10, 0.40], [0.20, 0.10], [0.10, 0.10], [0.50, 0.20]]
    cmp = paired_comparison(method, draws, n_boot=4000)
    # pairs won: 0.30 > 0.10; 0.25 > both; 0.20 > both; 0.35 > 0.20 -> 6 of 8
    assert cmp.share_beaten == pytest.approx(6 / 8) and cmp.n_pairs == 8 and cmp.n_units == 4
    # paired differences per start: 0.05, 0.10, 0.10, 0.00 -> mean 0.0625
    assert cmp.mean_difference == pytest.approx(0.0625)
    assert 0.0 <= cmp.ci_low <= 0.0625 <= cmp.ci_high <= 0.10 + 1e-12
    assert cmp.verdict == ("above" if cmp.ci_low > 0 else "undecided")
    below = paired_comparison([0.1, 0.1, 0.1], [[0.3, 0.4], [0.2, 0.3], [0.5, 0.6]])
    assert below.share_beaten == 0 and below.ci_high < 0 and below.verdict == "below"
    mixed = paired_comparison([0.3, 0.1], [[0.1], [0.3]])
    assert mixed.ci_low < 0 < mixed.ci_high and mixed.verdict == "undecided"
    # one start: no interval; the published rule (above the draws' mean + 1 std) decides
    one = paired_comparison([0.31], [[0.10, 0.20, 0.30]])
    assert (one.ci_low, one.ci_high) == pytest.approx((0.11, 0.11))
    assert one.verdict == "above"  # 0.31 > mean 0.20 + std 0.10
    assert paired_comparison([0.25], [[0.10, 0.20, 0.30]]).verdict == "not above"


def test_bootstrap_interval_of_the_mean_matches_the_normal_approximation():
    values = torch.randn(400, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    low, high = bootstrap_mean_interval(values, n_boot=20_000)
    half = 1.96 * float(values.std()) / 400**0.5
    assert low == pytest.approx(float(values.mean()) - half, abs=0.01)
    assert high == pytest.approx(float(values.mean()) + half, abs=0.01)
    with pytest.raises(ValueError, match="units"):
        paired_comparison([0.1, 0.2], [[0.1]])
