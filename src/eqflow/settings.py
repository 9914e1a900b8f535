"""A setting's rule (its type and range) and the check that names the setting's key in its
error. The module that uses a value owns its rule; :mod:`eqflow.config` checks every rule of a
composed config at start-up, and a constructor checks its own arguments with the same rule."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    kind: type | tuple[type, ...] | str
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: Sequence[Any] | None = None
    nullable: bool = False

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        kind = {
            "sizes": "a list of positive integers, e.g. [64, 64]",
            "bandwidth": "a number > 0, or median (the start set's median distance)",
            "box": "a number > 0, null (no box), or data (1.5 x the data's largest |x_i|)",
            "count_or_auto": "an integer >= 1, or auto",
            int: "an integer",
            float: "a finite number",
            bool: "true or false",
            str: "a string",
            (int, float): "a number",
        }.get(self.kind, str(self.kind))
        bounds = [
            f"{op} {v}"
            for op, v in [(">", self.gt), (">=", self.ge), ("<=", self.le), ("<", self.lt)]
            if v is not None
        ]
        return kind + (" " + " and ".join(bounds) if bounds else "")

    def ok(self, value: Any) -> bool:
        if value is None:
            return self.nullable
        if self.kind == "sizes":  # a list of positive integers (layer widths)
            return (
                isinstance(value, Sequence)
                and not isinstance(value, str)
                and len(value) > 0
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
            )
        if self.kind == "bandwidth":
            return value == "median" or Rule(float, gt=0).ok(value)
        if self.kind == "box":
            return value == "data" or Rule(float, gt=0).ok(value)
        if self.kind == "count_or_auto":
            return value == "auto" or Rule(int, ge=1).ok(value)
        if self.choices is not None:
            return value in self.choices
        kinds = self.kind if isinstance(self.kind, tuple) else (self.kind,)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            pass  # an integer is a fine number
        elif isinstance(value, bool) and bool not in kinds:
            return False
        elif not isinstance(value, kinds):
            return False
        if isinstance(value, float) and not math.isfinite(value):
            return False
        return (
            (self.gt is None or value > self.gt)
            and (self.ge is None or value >= self.ge)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )


INT_POS, INT_NONNEG, NUM_POS, NUM_NONNEG = (
    Rule(int, gt=0),
    Rule(int, ge=0),
    Rule(float, gt=0),
    Rule(float, ge=0),
)


def check_setting(key: str, value: Any, rule: Rule) -> None:
    """Raise ValueError naming ``key`` when ``value`` breaks ``rule``."""
    if not rule.ok(value):
        raise ValueError(f"{key}={value!r}: expected {rule.describe()}")
