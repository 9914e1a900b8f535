"""One owner per setting: every key an error message names is a key of some composed config."""

import ast
import re
from pathlib import Path

import pytest
from helpers import compose_train
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ("data", "score", "flow", "measure", "trainer")
# a config key in a message: data.n_steps, flow.model.lr, measure.creatures.start, ...
KEY = re.compile(r"(?<![\w.])((?:" + "|".join(GROUPS) + r")(?:\.[a-z][a-z0-9_]*)+)")
# words that follow a group name in prose, not keys ("data.x" is an attribute in a docstring)
NOT_KEYS = {"data.x", "data.system", "data.dim", "flow.pt"}


def _message_strings() -> set[str]:
    """String constants of every ``raise`` in src/ (f-strings' literal parts included) and the
    keys that ``check_setting`` calls name."""
    out = set()
    for path in (ROOT / "src").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                for sub in ast.walk(node.exc):
                    if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                        out.add(sub.value)
            called = isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            if called and node.func.id == "check_setting" and node.args:  # the key it names
                if isinstance(node.args[0], ast.Constant):
                    out.add(node.args[0].value)
    return out


def _named_keys() -> set[str]:
    keys = set()
    for text in _message_strings():
        keys |= {k.rstrip(".") for k in KEY.findall(text)}
    return keys - NOT_KEYS


def _composed_keys() -> set[str]:
    """Every dotted key of the train config under each option of each group and experiment."""
    keys: set[str] = set()
    options = [f"experiment={p.stem}" for p in (ROOT / "conf" / "experiment").glob("*.yaml")]
    for group in ("flow", "score", "measure", "data"):
        folder = ROOT / "conf" / group
        options += [
            f"{group}={p.relative_to(folder).with_suffix('')}" for p in folder.rglob("*.yaml")
        ]
    for option in options:
        overrides = [option] + (["data.path=x.csv"] if "points" in option else [])
        cfg = OmegaConf.to_container(compose_train(overrides, tiny=False), resolve=False)
        keys |= set(_flatten(cfg))
    return keys


def _flatten(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            name = f"{prefix}.{k}" if prefix else str(k)
            yield name
            yield from _flatten(v, name)


@pytest.mark.slow
def test_every_key_an_error_message_names_exists():
    named, composed = _named_keys(), _composed_keys()
    assert len(named) > 30  # the scan finds the messages
    missing = sorted(k for k in named if k not in composed)
    assert missing == [], f"error messages name keys no config has: {missing}"


def test_a_shared_range_has_one_owner_used_at_start_up_and_by_each_constructor():
    import pytest
    import torch

    from eqflow.config import RULES
    from eqflow.models import EnergyScoreModule, ExactFlowModule, LowRankExactFlow
    from eqflow.models.flow import NORM_MOMENTUM, SCALE_PENALTY

    assert RULES["flow.model.norm_momentum"] is NORM_MOMENTUM
    assert RULES["flow.model.scale_penalty"] is SCALE_PENALTY
    score = EnergyScoreModule(dim=3, hidden=[4])
    for flow in (ExactFlowModule, LowRankExactFlow):
        with pytest.raises(ValueError, match=r"flow.model.norm_momentum=0.0: expected .*<= 1"):
            flow(score, dim=3, norm_momentum=0.0)
        with pytest.raises(ValueError, match=r"flow.model.scale_penalty=-1.0"):
            flow(score, dim=3, scale_penalty=-1.0)
    assert torch.isfinite(ExactFlowModule(score, dim=3, norm_momentum=1.0).running_sq).all()
