"""Table 2's numbers: each start's |cos| to the simulator for the flow (both signs of D) and the
baselines' draws, and their summary with the paired statistics over starts
(:mod:`eqflow.metrics.paired`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from eqflow.metrics.paired import paired_comparison
from eqflow.protocols.langevin import SDERecord


@dataclass
class StartFidelity:
    """One start's |cos| to the simulator: the flow with +D and -D, and each baseline draw."""

    plus: float
    minus: float
    random: list[float]
    reweight: list[float]

    def as_dict(self) -> dict:
        return {
            "plus": self.plus,
            "minus": self.minus,
            "random": self.random,
            "reweight": self.reweight,
        }


BASELINES = {"random": "random", "reweight": "random re-weight"}


@dataclass
class PatternFidelity:
    """Table 2 from S starts: per start, the flow (both signs) and the baselines' |cos| to the
    truth; ``record`` and ``truth`` are the first start's (for the figures). The sign of D is a
    property of the flow, so it is chosen once: the sign with the higher mean over starts (with
    one start, the better of the two, as published)."""

    starts: list[StartFidelity]
    record: SDERecord
    truth: torch.Tensor
    x0: torch.Tensor | None = None  # the first start pattern

    @property
    def plus(self) -> float:
        return sum(s.plus for s in self.starts) / len(self.starts)

    @property
    def minus(self) -> float:
        return sum(s.minus for s in self.starts) / len(self.starts)

    @property
    def sign(self) -> str:
        return "+" if self.plus >= self.minus else "-"

    @property
    def per_start(self) -> list[float]:
        """The training-free value of each start, with the chosen sign."""
        return [s.plus if self.sign == "+" else s.minus for s in self.starts]

    @property
    def random(self) -> list[float]:
        return [v for s in self.starts for v in s.random]

    @property
    def reweight(self) -> list[float]:
        return [v for s in self.starts for v in s.reweight]

    def summary(self, prefix: str = "table2") -> dict:
        def stats(xs):
            t = torch.tensor(xs, dtype=torch.float64)
            return float(t.mean()), float(t.std()) if len(xs) > 1 else 0.0

        tf = self.per_start
        tf_mean, tf_std = stats(tf)
        rm, rs = stats(self.random)
        wm, ws = stats(self.reweight) if self.reweight else (float("nan"), float("nan"))
        out = {
            f"{prefix}/n_starts": len(self.starts),
            f"{prefix}/training_free": tf_mean,
            f"{prefix}/training_free_std": tf_std,
            f"{prefix}/training_free_plus": self.plus,
            f"{prefix}/training_free_minus": self.minus,
            f"{prefix}/sign": self.sign,
            f"{prefix}/random_mean": rm,
            f"{prefix}/random_std": rs,
            f"{prefix}/reweight_mean": wm,
            f"{prefix}/reweight_std": ws,
            f"{prefix}/random_draws": self.random,
            f"{prefix}/reweight_draws": self.reweight,
            f"{prefix}/starts": [s.as_dict() for s in self.starts],
        }
        for key in BASELINES:
            draws = [getattr(s, key) for s in self.starts]
            if all(draws):
                cmp = paired_comparison(tf, draws)
                out |= {
                    f"{prefix}/{key}_beaten_share": cmp.share_beaten,
                    f"{prefix}/{key}_difference": cmp.mean_difference,
                    f"{prefix}/{key}_difference_ci_low": cmp.ci_low,
                    f"{prefix}/{key}_difference_ci_high": cmp.ci_high,
                    f"{prefix}/{key}_verdict": cmp.verdict,
                }
        return out
