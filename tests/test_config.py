from pathlib import Path

import pytest
from helpers import CONF, compose_train
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from eqflow.config import validate
from eqflow.errors import ConfigError

EXPERIMENTS = sorted(p.stem for p in (Path(CONF) / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_composes_and_validates(experiment, tmp_path):
    cfg = compose_train([f"experiment={experiment}"], tmp_path, tiny=False)
    validate(cfg)
    OmegaConf.to_container(cfg.data, resolve=True)
    assert cfg.trainer.max_epochs >= 1


def test_paper_configs_keep_published_settings(tmp_path):
    cfg = compose_train(["experiment=lorenz_paper"], tmp_path, tiny=False)
    assert cfg.score.epochs == 512 and cfg.trainer.max_epochs == 512
    assert cfg.flow.model.divergence == "hutchinson" and cfg.flow.model.n_probes == 10
    assert cfg.score.model.t == 0.2 and cfg.data.burn_in_steps == 0
    assert cfg.flow.batch_size == 2048 and cfg.flow.model.lr == 0.01


def test_image_paper_configs_keep_published_settings(tmp_path):
    cfg = compose_train(["experiment=gray_scott_spirals_paper"], tmp_path, tiny=False)
    assert (cfg.data.size, cfg.data.n_samples, cfg.data.steps) == (128, 8192, 10000)
    assert cfg.data.preset == "spirals" and cfg.flow.model.kernel == "gamma"
    m = cfg.score.model
    assert list(m.block_out_channels) == [16, 32, 64] and m.norm_num_groups == 8
    assert (m.num_train_timesteps, m.beta_start, m.beta_end, m.prediction, m.timestep) == (
        100,
        1e-4,
        0.1,
        "v",
        10,
    )
    assert (m.lr, m.weight_decay, m.warmup_steps) == (1e-3, 0.01, 500)
    assert (
        cfg.score.epochs,
        cfg.score.batch_size,
        cfg.score.val_fraction,
        cfg.score.gradient_clip_val,
    ) == (100, 64, 0.1, 1.0)
    p = cfg.measure.patterns
    assert (p.eta, p.dt, p.steps, p.ema, p.ema_until, p.truth_steps, p.n_draws) == (
        0.1,
        0.01,
        300,
        0.9,
        200,
        20,
        10,
    )
    cfg = compose_train(["experiment=alife_paper", "icon=taiji"], tmp_path, tiny=False)
    assert (cfg.data.canvas, cfg.data.icon_size, cfg.data.n_samples, cfg.data.icon) == (
        128,
        64,
        8192,
        "taiji",
    )
    assert cfg.score.epochs == 20 and cfg.measure.creatures.steps == 2000
    assert cfg.measure.creatures.scale == 2  # a 256-pixel canvas, twice the training one
    assert cfg.score.precision is None  # float32, not the CPU-quick bfloat16
    assert cfg.measure.creatures.start == "noise"  # published; the CPU-quick one: the sampler
    quick = compose_train(["experiment=alife"], tmp_path, tiny=False)
    assert quick.measure.creatures.start == "sampler"
    assert quick.score.model.every_level_share > 0  # which the sampler needs
    assert cfg.score.model.train_timesteps is None  # published: every noise level


@pytest.mark.parametrize(
    "override,key",
    [
        ("flow.model.lr=-1", "flow.model.lr"),
        ("trainer.max_epochs=abc", "trainer.max_epochs"),
        ("flow.model.activation=swish", "flow.model.activation"),
        ("score.model.t=1.5", "score.model.t"),
        ("seed=-3", "seed"),
        ("data.n_samples=0", "data.n_samples"),
        ("+score.val_fraction=1.5", "score.val_fraction"),
    ],
)
def test_bad_values_are_named(override, key, tmp_path):
    cfg = compose_train([override], tmp_path)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_a_bad_value_of_the_published_flow_is_named(tmp_path):
    cfg = compose_train(["flow=mlp", "flow.model.divergence=trace"], tmp_path)
    with pytest.raises(ConfigError, match=r"flow\.model\.divergence"):
        validate(cfg)


@pytest.mark.parametrize(
    "override,key",
    [
        ("score.model.ema_decay=1.5", "score.model.ema_decay"),
        ("score.precision=fp8", "score.precision"),
        ("measure.patterns.ema=1.0", "measure.patterns.ema"),
        ("flow.model.kernel=hexagonal", "flow.model.kernel"),
        ("data.size=4", "data.size"),
    ],
)
def test_bad_image_values_are_named(override, key, tmp_path):
    cfg = compose_train(["experiment=gray_scott_waves", override], tmp_path, tiny=False)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate(cfg)


def test_unknown_key_and_unknown_dataset_fail_at_compose(tmp_path):
    with pytest.raises(ConfigCompositionException, match="flow.model.learning_rate"):
        compose_train(["flow.model.learning_rate=0.1"], tmp_path)
    with pytest.raises(ConfigCompositionException, match="lorentz"):
        compose_train(["data=lorentz"], tmp_path)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_takes_the_training_free_flow(experiment, tmp_path):
    from hydra.utils import instantiate

    from eqflow.models import ScoreModule

    cfg = compose_train([f"experiment={experiment}", "flow=training_free"], tmp_path, tiny=False)
    validate(cfg)
    image = experiment.startswith(("gray_scott", "alife", "images"))
    dim = 2 if experiment.startswith("gray_scott") else 3
    flow = instantiate(
        cfg.flow.model, score=ScoreModule(dim=3), dim=dim, **({"spatial": True} if image else {})
    )
    assert not flow.trainable


def test_slurm_launcher_config_composes_with_documented_keys():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "hydra/launcher=slurm",
                "hydra.launcher.partition=gpu",
                "hydra.launcher.gpus_per_node=1",
            ],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.timeout_min > 0 and launcher.cpus_per_task >= 1
    assert any("WANDB_MODE=offline" in line for line in launcher.setup)


@pytest.mark.slow
def test_an_override_of_the_old_callbacks_layout_names_the_new_key(tmp_path):
    import subprocess
    import sys

    from eqflow.compat import renamed_override_message

    assert "measure.mmd.steps=5" in renamed_override_message(["seed=1", "callbacks.mmd.steps=5"])
    assert "measure=creatures" in renamed_override_message(["callbacks=creatures"])
    assert renamed_override_message(["callbacks.checkpoint=null", "measure.mmd=null"]) is None
    done = subprocess.run(
        [sys.executable, str(Path(CONF).parent / "train.py"), "callbacks.lyapunov.steps=10"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "measure.lyapunov.steps=10" in done.stderr
    assert not (tmp_path / "outputs").exists()


def test_a_run_config_with_protocols_under_callbacks_is_read_in_the_new_layout():
    from eqflow.compat import upgrade_config
    from eqflow.protocols import Preservation
    from eqflow.stages.building import build_protocols

    old = OmegaConf.create(
        {
            "callbacks": {
                "checkpoint": {
                    "_target_": "eqflow.checkpointing.every_epoch_checkpoint",  # the old path
                    "folder": "ck",
                },
                "mmd": {"_target_": "eqflow.protocols.Preservation", "steps": 7},
            }
        }
    )
    protocols, callbacks = build_protocols(upgrade_config(old))
    assert [type(p) for p in protocols] == [Preservation] and protocols[0].steps == 7
    assert len(callbacks) == 1 and not isinstance(callbacks[0], Preservation)


def test_a_table2_run_from_before_n_starts_reads_as_one_start_with_its_better_sign():
    from eqflow.analysis.patterns import chosen_sign, starts_of_run

    old = {
        "table2/training_free_plus": 0.2,
        "table2/training_free_minus": 0.3,
        "table2/random_draws": [0.1, 0.05],
    }
    assert chosen_sign(old) == "-"
    assert starts_of_run(old) == [
        {"training-free": 0.3, "random": [0.1, 0.05], "random re-weight": []}
    ]
    new = {
        **old,
        "table2/sign": "+",
        "table2/starts": [{**old, "plus": 0.4, "minus": 0.1, "random": [0.2], "reweight": [0.0]}],
    }
    assert starts_of_run(new) == [
        {"training-free": 0.4, "random": [0.2], "random re-weight": [0.0]}
    ]
