from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from eqflow.config import validate
from eqflow.errors import ConfigError
from helpers import CONF, compose_train

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


@pytest.mark.parametrize("override,key", [
    ("flow.model.lr=-1", "flow.model.lr"),
    ("trainer.max_epochs=abc", "trainer.max_epochs"),
    ("flow.model.divergence=trace", "flow.model.divergence"),
    ("score.model.t=1.5", "score.model.t"),
    ("seed=-3", "seed"),
    ("data.n_samples=0", "data.n_samples"),
])
def test_bad_values_are_named(override, key, tmp_path):
    cfg = compose_train([override], tmp_path)
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

    from eqflow.score import ScoreModule

    cfg = compose_train([f"experiment={experiment}", "flow=training_free"], tmp_path, tiny=False)
    validate(cfg)
    flow = instantiate(cfg.flow.model, score=ScoreModule(dim=3), dim=3)
    assert not flow.trainable


def test_slurm_launcher_config_composes_with_documented_keys():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                          "hydra.launcher.gpus_per_node=1"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1
    assert launcher.timeout_min > 0 and launcher.cpus_per_task >= 1
    assert any("WANDB_MODE=offline" in line for line in launcher.setup)
