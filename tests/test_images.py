"""The image side: circular U-Net score model, training-free image flows, the Langevin
representation of Table 2, DDP score training, and Table 2 end to end on a tiny run."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from helpers import TINY_PATTERNS, compose_train
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from eqflow import pipeline
from eqflow.data import SnapshotDataModule
from eqflow.data.augment import periodic_symmetry
from eqflow.dynamics import sde_heun
from eqflow.models import ImageScoreModule, TrainingFreeFlow
from eqflow.models.baselines import StackedNetworks, redrawn_network
from eqflow.nets.unet import CircularUNet2DModel, padding_modes
from eqflow.protocols.langevin import langevin_representation
from eqflow.stages import data as data_stage
from eqflow.stages import score as score_stage

ROOT = Path(__file__).resolve().parents[1]


def small_score(**kw) -> ImageScoreModule:
    torch.manual_seed(0)
    return ImageScoreModule(2, block_out_channels=(8, 16, 16), norm_num_groups=4, **kw)


def test_circular_padding_everywhere_and_translation_equivariance():
    model = small_score().eval()
    assert padding_modes(model.unet) == {"circular"}
    x = torch.randn(2, 2, 32, 32)
    with torch.no_grad():
        shifted = model.score(torch.roll(x, (8, -16), (-2, -1)))
        expected = torch.roll(model.score(x), (8, -16), (-2, -1))
    # shifts by multiples of 8 commute with a 3-level U-Net on a periodic domain
    assert torch.allclose(shifted, expected, atol=1e-4)


def test_circular_padding_survives_save_and_load(tmp_path):
    model = small_score(ema_decay=0.9).eval()
    x = torch.randn(1, 2, 32, 32)
    with torch.no_grad():
        ref = model.score(x)
    # our cache and Lightning checkpoints: rebuilt from hyper-parameters + state dict
    trainer = pl.Trainer(
        max_epochs=0, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.strategy.connect(model)
    trainer.save_checkpoint(tmp_path / "score.ckpt")
    loaded = ImageScoreModule.load_from_checkpoint(tmp_path / "score.ckpt").eval()
    assert padding_modes(loaded.unet) == padding_modes(loaded.network) == {"circular"}
    with torch.no_grad():
        assert torch.allclose(loaded.score(x), ref)
    # diffusers' own format
    model.unet.save_pretrained(tmp_path / "unet")
    again = CircularUNet2DModel.from_pretrained(tmp_path / "unet")
    assert padding_modes(again) == {"circular"}
    assert padding_modes(copy.deepcopy(model.unet)) == {"circular"}


def test_unet_score_trains_and_points_back_to_the_data():
    from eqflow.data.gray_scott import GrayScottSystem

    snaps = GrayScottSystem("maze", size=32, n_samples=32, steps=300, progress=False).generate(
        torch.Generator().manual_seed(0)
    )
    model = small_score(warmup_steps=2)
    dm = SnapshotDataModule(None, snaps, 8, val_fraction=0.25)
    trainer = pl.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        gradient_clip_val=1.0,
    )
    trainer.fit(model, datamodule=dm)
    assert torch.isfinite(trainer.callback_metrics["score/val_loss"])
    model.eval()
    g = torch.Generator().manual_seed(1)
    x0 = snaps.x[:8]
    eps = torch.randn(x0.shape, generator=g)
    a = model.alpha
    x = a.sqrt() * x0 + (1 - a).sqrt() * eps
    with torch.no_grad():
        s = model.score(x)
        x0_hat = model.denoise(x)
    assert s.shape == x.shape and x0_hat.shape == x.shape
    # the score points from the noised image back toward the clean one: s . eps < 0
    assert ((s * eps).flatten(1).sum(1) < 0).all()
    assert torch.allclose(x0_hat, (x + (1 - a) * s) / a.sqrt(), atol=1e-4)  # Tweedie


def test_a_timestep_band_trains_only_those_levels_and_the_level_loss_uses_the_score_level():
    model = small_score(train_timesteps=[5, 12], timestep=10)
    seen = []
    unet_forward = model.unet.forward

    def spy(x, t, *args, **kwargs):
        seen.append(t.clone())
        return unet_forward(x, t, *args, **kwargs)

    model.unet.forward = spy
    x0 = torch.rand(64, 2, 16, 16) * 2 - 1
    model.diffusion_loss(x0)
    levels = seen[-1]
    assert levels.min() >= 5 and levels.max() <= 12 and len(levels.unique()) > 3
    model.diffusion_loss(x0, timestep=10)
    assert (seen[-1] == 10).all()
    assert not model.trains_every_level and small_score().trains_every_level


def test_a_share_of_draws_over_every_level_keeps_the_rest_in_the_band():
    model = small_score(train_timesteps=[5, 12], timestep=10, every_level_share=0.25)
    torch.manual_seed(0)
    k = model.training_levels(40_000, "cpu")
    outside = ((k < 5) | (k > 12)).float().mean().item()
    # a quarter spread over 100 levels, of which 8 are in the band: 0.25 x 92/100 = 0.23 outside
    assert abs(outside - 0.23) < 0.01  # binomial std 0.002
    assert k.min() == 0 and k.max() == 99
    assert model.trains_every_level
    assert not small_score(train_timesteps=[5, 12], timestep=10).trains_every_level


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_a_share_outside_zero_one_is_refused_by_its_key(share):
    with pytest.raises(ValueError, match="score.model.every_level_share"):
        small_score(train_timesteps=[5, 12], timestep=10, every_level_share=share)


@pytest.mark.parametrize("band", [[12, 30], [5], [-1, 20], [5, 100]])
def test_a_timestep_band_that_misses_the_score_level_or_the_schedule_is_refused(band):
    with pytest.raises(ValueError, match="train_timesteps"):
        small_score(train_timesteps=band, timestep=10)


@pytest.mark.parametrize("kernel,radius", [("gamma", 0), ("random", 0), ("random", 2)])
def test_training_free_image_flow_is_orthogonal_to_the_score(kernel, radius):
    score = small_score().double().eval()
    flow = TrainingFreeFlow(
        score, dim=2, seed=3, kernel=kernel, radius=radius, spatial=True
    ).double()
    x = torch.randn(3, 2, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        v, s = flow.velocity(x), flow.score(x)
    dots = (v * s).flatten(1).sum(1) / (v.flatten(1).norm(dim=1) * s.flatten(1).norm(dim=1))
    assert dots.abs().max() < 1e-12
    assert v.abs().max() > 0


def test_a_channel_only_skew_kernel_moves_nothing_along_a_one_colour_icon():
    """Data of one colour u on a plain background (the dot) vary only along u at each pixel; the
    published 1 x 1 kernel maps a score along u to D u, orthogonal to u (u.D u = 0), so none of
    that velocity stays within the icon's colour line. A spatial kernel (radius 1) mixes
    neighbouring pixels and does move along u. (The dots stay still under both: docs/alife.md.)"""
    from eqflow.dynamics.skew import circular_conv, skew_kernel

    u = torch.tensor([0.1, 0.3, 0.9], dtype=torch.float64) - 1  # blue dot minus white
    g = torch.Generator().manual_seed(0)
    s = u[None, :, None, None] * torch.randn(2, 1, 16, 16, generator=g, dtype=torch.float64)
    along_u = {}
    for radius in (0, 1):
        kernel = skew_kernel(3, radius, torch.Generator().manual_seed(1), dtype=torch.float64)
        v = circular_conv(s, kernel / kernel.norm())
        along_u[radius] = float((v * u[None, :, None, None]).sum(1).norm() / v.norm())
    assert along_u[0] < 1e-12
    assert along_u[1] > 0.1


def test_heun_with_the_score_passed_to_the_drift_matches_the_plain_form():
    D = torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
    score = lambda x: -x  # noqa: E731
    x0 = torch.randn(4, 2, dtype=torch.float64)
    plain = sde_heun(
        lambda x: score(x) @ D.T,
        score,
        x0,
        0.05,
        10,
        0.3,
        generator=torch.Generator().manual_seed(2),
    )
    fused = sde_heun(
        lambda x, s: s @ D.T,
        score,
        x0,
        0.05,
        10,
        0.3,
        generator=torch.Generator().manual_seed(2),
        drift_from_score=True,
    )
    assert torch.allclose(plain, fused)


def test_langevin_representation_is_the_ema_of_the_path_minus_the_start():
    # eta = 0 and a constant drift c: x_k = x0 + k dt c, so the EMA is computable by hand
    c = torch.tensor([1.0, -2.0], dtype=torch.float64).view(1, 2, 1, 1)
    x0 = torch.zeros(1, 2, 1, 1, dtype=torch.float64)
    ema, dt, n = 0.9, 0.1, 3
    rec = langevin_representation(
        lambda x, s: c.expand_as(x),
        torch.zeros_like,
        x0,
        eta=0.0,
        dt=dt,
        steps=5,
        ema=ema,
        ema_until=n,
    )
    m = 0.0
    for k in range(1, n + 1):
        m = ema * m + (1 - ema) * k * dt
    assert torch.allclose(rec.representation, m * c)
    assert torch.allclose(rec.final, 5 * dt * c)


def test_redrawn_network_keeps_each_tensors_mean_and_std():
    net = torch.nn.Linear(200, 100)
    before = [p.detach().clone() for p in net.parameters()]
    new = redrawn_network(net, torch.Generator().manual_seed(0))
    for old, p, q in zip(before, net.parameters(), new.parameters()):
        assert torch.equal(old, p)  # the original is untouched
        assert not torch.equal(p, q)
        assert abs(float(q.mean() - p.mean())) < 0.1 * float(p.std())
        assert float(q.std()) == pytest.approx(float(p.std()), rel=0.1)


def test_stacked_networks_send_each_image_through_its_own_network():
    score = small_score().eval()
    g = torch.Generator().manual_seed(0)
    nets = [redrawn_network(score.network, g) for _ in range(3)]
    x = torch.randn(3, 2, 16, 16, generator=g)
    with torch.no_grad():
        looped = torch.cat([score.score(x[i : i + 1], network=n) for i, n in enumerate(nets)])
        stacked = score.score(x, network=StackedNetworks(nets))
    assert torch.allclose(stacked, looped, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(looped[0], score.score(x[:1])[0])  # the weights really differ
    with pytest.raises(ValueError, match="holds 3 networks"):
        StackedNetworks(nets)(x[:2], torch.zeros(2))


def test_periodic_symmetry_only_moves_pixels():
    x = torch.randn(3, 2, 8, 8)
    y = periodic_symmetry(x, torch.Generator().manual_seed(0))
    assert torch.equal(periodic_symmetry(x, torch.Generator().manual_seed(0)), y)
    for a, b in zip(x, y):  # each image keeps its pixel values, channels stay together
        assert torch.equal(a.flatten(1).sort(1).values, b.flatten(1).sort(1).values)


def _shifts_and_rotations(img: torch.Tensor) -> list[torch.Tensor]:
    h, w = img.shape[-2:]
    return [
        torch.rot90(torch.roll(img, (i, j), (-2, -1)), k, (-2, -1))
        for i in range(h)
        for j in range(w)
        for k in range(4)
    ]


def test_periodic_symmetry_without_mirror_keeps_a_chiral_image_chiral():
    chiral = torch.zeros(1, 1, 5, 5)
    chiral[0, 0, 1, 1:4] = 1.0  # an "L": no rotation or shift of it equals its mirror image
    chiral[0, 0, 2, 1] = 1.0  # arms of unequal length
    mirrored = chiral.flip(-1)
    assert not any(torch.equal(mirrored[0], m) for m in _shifts_and_rotations(chiral[0]))
    gen = torch.Generator().manual_seed(0)
    seen_mirror = False
    for _ in range(40):
        kept = periodic_symmetry(chiral, gen, mirror=False)[0]
        assert any(torch.equal(kept, m) for m in _shifts_and_rotations(chiral[0]))
        full = periodic_symmetry(chiral, gen)[0]
        seen_mirror |= not any(torch.equal(full, m) for m in _shifts_and_rotations(chiral[0]))
    assert seen_mirror  # the full dihedral augmentation does mirror


def test_alife_score_is_augmented_without_mirrors():
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "experiment" / "alife.yaml")
    assert cfg.score.model.augment_mirror is False


@pytest.mark.slow
def test_ddp_trains_the_image_score_on_two_cpu_processes(tmp_path):
    cfg = compose_train(
        [
            *TINY_PATTERNS,
            "logger=none",
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "score.samples=null",
        ],
        tmp_path,
        tiny=False,
    )
    system, snaps = data_stage.load_data(cfg)
    score, info = score_stage.load_score(cfg, system, snaps)
    fresh = instantiate(cfg.score.model, channels=2, _convert_="all")
    trained = dict(score.unet.named_parameters())
    changed = [k for k, p in fresh.unet.named_parameters() if not torch.equal(p, trained[k])]
    assert changed, "DDP fit returned without trained weights"
    assert not info["score/cache_hit"]


@pytest.mark.slow
def test_table2_on_a_tiny_gray_scott_run(tmp_path):
    cfg = compose_train([*TINY_PATTERNS, "logger=csv"], tmp_path, tiny=False)
    result = pipeline.train(cfg)
    (result.output_dir / ".hydra").mkdir()
    OmegaConf.save(cfg, result.output_dir / ".hydra" / "config.yaml")  # as a Hydra run leaves it
    m = result.metrics
    for key in ("table2/training_free", "table2/random_mean", "table2/reweight_mean"):
        assert 0 <= m[key] <= 1
    assert m["table2/training_free"] == max(
        m["table2/training_free_plus"], m["table2/training_free_minus"]
    )
    assert len(m["table2/random_draws"]) == len(m["table2/reweight_draws"]) == 3
    assert cfg.optimized_metric == "table2/training_free"  # what a sweeper is given
    # the unit gamma kernel (spectral radius 1 / sqrt 2) at dt 0.01: Heun within 1 % of the
    # SDE's damping
    assert m["table2/drift_stiffness"] == pytest.approx(2**-0.5, rel=1e-3)
    assert 1 - 1e-3 < m["table2/heun_excess"] <= 1.01
    figs = result.output_dir / "figures"
    assert (figs / "patterns.png").exists() and (figs / "sde.gif").exists()
    assert list((result.output_dir / "score" / "samples").glob("samples_epoch*.png"))
    out = tmp_path / "eval"
    proc = subprocess.run(
        [
            sys.executable,
            "evaluate.py",
            f"sweep={result.output_dir}",
            f"paths.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={out}",
            "logger=none",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = (out / "table2.md").read_text()
    assert "maze (ours)" in table and "0.270" in table  # ours beside the published value
    summary = json.loads((out / "summary.json").read_text())
    assert summary["table2"]["maze"]["training-free"]["mean"] == pytest.approx(
        m["table2/training_free"]
    )
    assert summary["table2"]["maze"]["random"]["n"] == 3
    verdict = summary["above_baseline_mean_plus_std"]["maze"]
    assert set(verdict) == {"random", "random re-weight"}
    rows = summary["table2"]["maze"]
    for row, ok in verdict.items():
        assert ok == (rows["training-free"]["mean"] > rows[row]["mean"] + rows[row]["std"])
    assert summary["paired"]["maze"]["random"]["n_units"] == 1
    assert "Verdict rule" in table

    # evaluate.py patterns.n_starts=2: re-measured from two starts; the first is the run's own
    from eqflow.analysis.patterns import collect, paired

    run = result.output_dir
    columns, failed = collect(
        [run], {run: "run"}, False, tmp_path / "scratch", str(tmp_path / "cache"), n_starts=2
    )
    assert not failed and len(columns["maze"]["starts"]) == 2
    first = columns["maze"]["starts"][0]
    assert first["training-free"] == pytest.approx(m["table2/training_free"], abs=1e-6)
    assert first["random"] == pytest.approx(m["table2/random_draws"], abs=1e-6)
    stats = paired(columns)["maze"]["random"]
    assert stats["n_units"] == 2 and stats["n_pairs"] == 6


def test_a_learned_flow_pairs_with_the_training_free_flow_on_the_starts_both_met():
    from eqflow.analysis.patterns import learned_against_training_free

    def start(unit, value):
        return {"unit": unit, "training-free": value, "random": [0.1], "random re-weight": []}

    columns = {
        "waves": {
            "pattern": "waves",
            "flow": "training-free",
            "starts": [start(f"s{i}", 0.2) for i in range(6)],
        },
        "waves [LocalExactFlow]": {
            "pattern": "waves",
            "flow": "LocalExactFlow",
            # five shared starts, each 0.1 above; one start the training-free run did not meet
            "starts": [start(f"s{i}", 0.3 + 0.01 * i) for i in range(5)] + [start("x", 0.0)],
        },
    }
    stats = learned_against_training_free(columns)["waves [LocalExactFlow]"]
    assert stats["n_units"] == 5 and stats["share_beaten"] == 1.0
    assert stats["learned_mean"] == pytest.approx(0.32)
    assert stats["training_free_mean"] == pytest.approx(0.2)
    assert stats["mean_difference"] == pytest.approx(0.12) and stats["verdict"] == "above"
    # a learned flow that equals the training-free one is not called better
    columns["waves [LocalExactFlow]"]["starts"] = [start(f"s{i}", 0.2) for i in range(6)]
    stats = learned_against_training_free(columns)["waves [LocalExactFlow]"]
    assert stats["mean_difference"] == 0 and stats["verdict"] == "undecided"


@pytest.mark.slow
def test_table2_pairs_a_learned_exact_flow_with_the_training_free_run_of_its_starts(tmp_path):
    from eqflow.analysis.patterns import collect, learned_against_training_free

    tiny = [*TINY_PATTERNS, "logger=csv", "measure.patterns.n_starts=2"]
    runs = {}
    for flow in ("training_free_gamma", "exact_local"):
        cfg = compose_train(
            [*tiny, f"flow={flow}", "trainer.max_epochs=1", "flow.batch_size=8"],
            tmp_path / flow,
            tiny=False,
        )
        with open_dict(cfg):
            cfg.paths.cache_dir = str(tmp_path / "cache")  # one score model for both
        result = pipeline.train(cfg)
        (result.output_dir / ".hydra").mkdir()
        OmegaConf.save(cfg, result.output_dir / ".hydra" / "config.yaml")
        runs[result.output_dir] = flow
    columns, failed = collect(list(runs), runs, False, tmp_path / "scratch")
    assert not failed and set(columns) == {"maze", "maze [LocalExactFlow]"}
    units = [st["unit"] for st in columns["maze"]["starts"]]
    assert units == [st["unit"] for st in columns["maze [LocalExactFlow]"]["starts"]]
    # the same start patterns: the baselines' draws, which do not depend on the flow, agree
    for a, b in zip(columns["maze"]["starts"], columns["maze [LocalExactFlow]"]["starts"]):
        assert a["random"] == pytest.approx(b["random"], abs=1e-6)
    stats = learned_against_training_free(columns)["maze [LocalExactFlow]"]
    assert stats["n_units"] == 2


def test_beats_baselines_asks_each_baseline_with_draws():
    from eqflow.analysis.patterns import beats_baselines

    table = {
        "maze": {
            "training-free": (0.20, 0.0, 1),
            "random": (0.10, 0.05, 10),
            "random re-weight": (0.15, 0.06, 10),
        },
        "waves": {
            "training-free": (0.30, 0.0, 1),
            "random": (0.10, 0.25, 10),
            "random re-weight": (0.0, 0.0, 0),
        },
    }
    assert beats_baselines(table) == {
        "maze": {"random": True, "random re-weight": False},
        "waves": {"random": False},
    }


@pytest.mark.slow
def test_score_precision_trains_in_bfloat16_keeps_float32_weights_and_keys_the_cache(tmp_path):
    """score.precision=bf16-mixed: the fit's forward passes in bfloat16, the cached weights in
    float32, and a cache entry of its own (an unset precision keeps the key it had before)."""
    import numpy as np

    from eqflow.stages.data import load_data
    from eqflow.stages.score import load_score
    from eqflow.stages.score_cache import score_key

    plain = compose_train(TINY_PATTERNS, tmp_path, tiny=False)
    bf16 = compose_train([*TINY_PATTERNS, "score.precision=bf16-mixed"], tmp_path, tiny=False)
    assert "precision" not in score_key(plain)["score"]
    assert score_key(bf16)["score"]["precision"] == "bf16-mixed"
    seen = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda m, i, o: seen.append(o.dtype) if isinstance(m, torch.nn.Conv2d) else None
    )
    try:
        system, snapshots = load_data(bf16)
        model, info = load_score(bf16, system, snapshots)
    finally:
        hook.remove()
    assert torch.bfloat16 in seen  # the fit ran under autocast
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert info["score/cache_hit"] is False and np.isfinite(info["score/final_loss"])
    assert score_key(plain) != score_key(bf16)


def test_translation_share_is_one_for_rigid_motion_and_near_zero_for_an_unrelated_field():
    from eqflow.metrics.advection import periodic_gradients, translation_share

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 24, 24, generator=g)
    dh, dw = periodic_gradients(x)
    rigid = -(0.7 * dh - 0.2 * dw)
    assert torch.allclose(translation_share(rigid, x), torch.ones(3), atol=1e-5)
    unrelated = torch.randn(x.shape, generator=g)
    share = translation_share(unrelated, x)
    # two directions among 2 x 24 x 24 = 1152: expected 2 / 1152 = 0.0017
    assert (share < 0.02).all() and (share >= 0).all()
    # a mix: the rigid part's share of the energy
    per_image = rigid.flatten(1).norm(dim=1) / unrelated.flatten(1).norm(dim=1)
    mixed = rigid + unrelated * per_image[:, None, None, None]
    assert torch.allclose(translation_share(mixed, x), torch.full((3,), 0.5), atol=0.05)
