"""Start-up validation of a composed config: every wrong type or out-of-range value fails
before any work is done, with a message that names the key, what it accepts and a fix.

Unknown keys are caught by Hydra itself (the composed config is in struct mode: an override of
a key that does not exist is refused and named; an unknown option of a group lists the options).
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig, OmegaConf

from eqflow.data.base import DATA_RULES
from eqflow.dynamics.divergence import METHODS, PROBES
from eqflow.dynamics.transport import CENTRAL_WEIGHTS
from eqflow.errors import ConfigError
from eqflow.models.flow import ESTIMATORS, NORM_MOMENTUM, SCALE_PENALTY
from eqflow.models.image_score import EMA_DECAY, EVERY_LEVEL_SHARE
from eqflow.models.optim import LR_SCHEDULES
from eqflow.models.score import PREDICTION, SCORE_LEVEL
from eqflow.models.training_free import TrainingFreeFlow
from eqflow.nets.mlp import ACTIVATIONS
from eqflow.protocols.creatures import Creatures
from eqflow.settings import INT_NONNEG, INT_POS, NUM_NONNEG, NUM_POS, Rule

_MISSING = object()
# Lightning's precisions for the score model's fit (null: the trainer's); bf16-mixed runs the
# convolutions in bfloat16 (weights and the cached model stay float32)
SCORE_PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "auto")
# the trainer's: Lightning's names and its integer shorthands
TRAINER_PRECISIONS = ("64-true", "32-true", "bf16-mixed", "16-mixed", "bf16-true", 64, 32)
# where the trainer runs; Lightning's others (tpu, hpu) are not supported by eqflow
ACCELERATORS = ("cpu", "gpu", "cuda", "mps", "auto")


# Checked where present; groups that lack a key (another dataset, another flow) skip it.
RULES: dict[str, Rule] = {
    **{f"data.{name}": rule for name, rule in DATA_RULES.items()},
    "seed": INT_NONNEG,
    "trainer.max_epochs": INT_NONNEG,
    "trainer.accelerator": Rule(str, choices=ACCELERATORS),
    "trainer.precision": Rule(str, choices=TRAINER_PRECISIONS),
    "data_seed": INT_NONNEG,
    "score.epochs": INT_NONNEG,
    "score.batch_size": INT_POS,
    "score.seed": INT_NONNEG,
    "score.model.prediction": PREDICTION,
    "score.model.num_steps": Rule(int, ge=2),
    "score.model.t": SCORE_LEVEL,
    "score.model.lr": NUM_POS,
    "score.model.weight_decay": NUM_NONNEG,
    "score.model.lr_schedule": Rule(str, choices=LR_SCHEDULES),
    "score.val_fraction": Rule(float, ge=0, lt=1),
    "score.gradient_clip_val": Rule(float, gt=0, nullable=True),
    "score.precision": Rule(str, choices=SCORE_PRECISIONS, nullable=True),
    "score.model.timestep": INT_NONNEG,
    "score.model.num_train_timesteps": Rule(int, ge=2),
    "score.model.layers_per_block": INT_POS,
    "score.model.norm_num_groups": INT_POS,
    "score.model.warmup_steps": INT_NONNEG,
    "score.model.ema_decay": EMA_DECAY,
    "score.model.every_level_share": EVERY_LEVEL_SHARE,
    "score.model.augment": Rule(bool),
    "score.model.augment_mirror": Rule(bool),
    "icon": Rule(str),
    "measure.creatures.scale": INT_POS,
    "measure.creatures.start": Rule(str, choices=Creatures.STARTS),
    "measure.creatures.integrity_frames": Rule(str, choices=Creatures.INTEGRITY_FRAMES),
    "measure.creatures.background": Rule(str, choices=Creatures.BACKGROUNDS),
    "measure.creatures.calibration": Rule(str, choices=Creatures.CALIBRATIONS),
    "measure.creatures.steps": INT_POS,
    "measure.creatures.dt": NUM_POS,
    "measure.creatures.eta": NUM_NONNEG,
    "measure.creatures.ema": Rule(float, ge=0, lt=1),
    "measure.creatures.frame_every": INT_POS,
    "measure.creatures.min_track_frames": Rule(int, ge=2),
    "measure.creatures.link_memory": Rule(int, ge=0),
    "measure.creatures.substeps": Creatures.SUBSTEPS,
    "measure.creatures.reference_images": INT_POS,
    "flow.batch_size": INT_POS,
    "flow.ensemble": INT_POS,
    "flow.model.hidden": Rule("sizes"),
    "score.model.hidden": Rule("sizes"),
    "score.model.block_out_channels": Rule("sizes"),
    "flow.model.lr": NUM_POS,
    "flow.model.weight_decay": NUM_NONNEG,
    "flow.model.lr_schedule": Rule(str, choices=LR_SCHEDULES),
    "flow.model.divergence": Rule(str, choices=METHODS),
    "flow.model.n_probes": INT_POS,
    "flow.model.rank": INT_POS,
    "flow.model.probe": Rule(str, choices=PROBES),
    "flow.model.estimator": Rule(str, choices=ESTIMATORS),
    "flow.model.relax_epochs": INT_NONNEG,
    "flow.model.compile": Rule(bool),
    "flow.model.relax_penalty": NUM_NONNEG,
    "flow.model.relax_lr": Rule(float, gt=0, nullable=True),
    "flow.model.n_freqs": INT_NONNEG,
    "flow.model.activation": Rule(str, choices=tuple(ACTIVATIONS)),
    "flow.model.norm_momentum": NORM_MOMENTUM,
    "flow.model.seed": INT_NONNEG,
    "flow.model.eta": NUM_NONNEG,
    "flow.model.kernel": Rule(str, choices=TrainingFreeFlow.KERNELS),
    "flow.model.radius": INT_NONNEG,
    "flow.model.scale_penalty": SCALE_PENALTY,
    "flow.model.calibration_points": INT_POS,
    "flow.model.speed": NUM_POS,
    "flow.model.window_sigma": NUM_POS,
    "flow.model.full_speed_share": NUM_POS,
    "flow.model.order": Rule(int, choices=tuple(CENTRAL_WEIGHTS)),
    "measure.residual.n_points": Rule(int, ge=2),
    "measure.patterns.eta": NUM_NONNEG,
    "measure.patterns.dt": NUM_POS,
    "measure.patterns.steps": INT_POS,
    "measure.patterns.ema": Rule(float, ge=0, lt=1),
    "measure.patterns.ema_until": INT_POS,
    "measure.patterns.truth_steps": INT_POS,
    "measure.patterns.n_draws": Rule(int, ge=1),
    "measure.patterns.n_starts": INT_POS,
    "measure.patterns.start_batch": INT_POS,
    "measure.mmd.n_points": Rule(int, ge=2),
    "measure.mmd.steps": INT_POS,
    "measure.mmd.dt": NUM_POS,
    "measure.mmd.bandwidth": Rule("bandwidth"),
    "measure.lyapunov.n_trajectories": INT_POS,
    "measure.lyapunov.steps": INT_POS,
    "measure.lyapunov.dt": NUM_POS,
    "measure.lyapunov.burn_in": INT_NONNEG,
    "measure.lyapunov.bound": Rule("box", nullable=True),
    "measure.lyapunov.compile": Rule(bool),
    "measure.fidelity.n_points": INT_POS,
    "ckpt_path": Rule(str, nullable=True),
}

# evaluate.py's settings
EVALUATE_RULES: dict[str, Rule] = {
    "seed": INT_NONNEG,
    "strict": Rule(bool),
    "n_points": INT_POS,
    "n_baselines": Rule(int, gt=0, nullable=True),
    "chaos.recompute": Rule(bool),
    "chaos.long_horizon": INT_NONNEG,
    "chaos.settings.n_trajectories": INT_POS,
    "chaos.settings.steps": INT_POS,
    "chaos.settings.dt": NUM_POS,
    "chaos.settings.burn_in": INT_NONNEG,
    "chaos.settings.bound": Rule("box", nullable=True),
    "chaos.settings.compile": Rule(bool),
    "mmd.n_points": Rule(int, ge=2),
    "mmd.steps": INT_POS,
    "mmd.dt": NUM_POS,
    "mmd.bandwidth": Rule("bandwidth"),
    "umap.enabled": Rule(bool),
    "umap.n_neighbors": Rule(int, ge=2),
    "patterns.recompute": Rule(bool),
    "systems.true_exponent_periods": NUM_POS,
    "patterns.n_starts": Rule(int, gt=0, nullable=True),
}


def validate(cfg: DictConfig, rules: dict[str, Rule] = RULES) -> None:
    """Raise :class:`ConfigError` naming every key whose value breaks its rule."""
    problems = []
    for key, rule in rules.items():
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
        if value is _MISSING:
            continue
        if not rule.ok(value):
            problems.append(
                f"  {key}={value!r} ({type(value).__name__}): expected "
                f"{rule.describe()}. Fix: override it, e.g. `{key}=<{rule.describe()}>`."
            )
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))


# the Hydra plugins an override needs and the extra of eqflow's that installs them
PLUGIN_EXTRAS = {
    "hparams_search=": ("hydra_plugins.hydra_optuna_sweeper", "search"),
    "hydra/sweeper=optuna": ("hydra_plugins.hydra_optuna_sweeper", "search"),
}


def missing_plugin_message(args: Sequence[str]) -> str | None:
    """A message naming the install command when an override needs a Hydra plugin that is not
    installed (Hydra itself would only say that the option is not found)."""
    import importlib.util

    for arg in args:
        for prefix, (module, extra) in PLUGIN_EXTRAS.items():
            if arg.lstrip("+~").startswith(prefix) and importlib.util.find_spec(module) is None:
                return (
                    f"{arg} needs the {module.split('.')[-1]} plugin, which is not installed. "
                    f'Fix: pip install -e ".[{extra}]" (from the eqflow folder)'
                )
    return None
