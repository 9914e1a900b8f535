"""Train (or build) an equilibrium flow and measure it: `python train.py [experiment=...]`."""

import logging
import math
import shutil
import sys
from pathlib import Path

import hydra
from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, open_dict

from eqflow.compat import renamed_override_message
from eqflow.config import missing_plugin_message
from eqflow.errors import ConfigError, NonFiniteLossError, RunInterrupted
from eqflow.evaluation import evaluate_sweep
from eqflow.hydra_callbacks import ENDED_SWEEPS
from eqflow.io.interrupts import stage, stop_on_signals
from eqflow.io.metrics_file import ensemble_member_metrics
from eqflow.pipeline import train
from eqflow.runs import RunLoadError
from eqflow.sweep_jobs import FINISHED, JobRecord, sweep_summary

log = logging.getLogger("eqflow")


def evaluate_after_training(cfg: DictConfig, run_dir) -> None:
    """``evaluate=true``: the run (an ensemble's members) evaluated as a study, into
    ``<run dir>/evaluate/``, with conf/evaluate.yaml's settings and ``evaluate_overrides``."""
    eval_cfg = compose(config_name="evaluate", overrides=list(cfg.get("evaluate_overrides") or []))
    with open_dict(eval_cfg):
        eval_cfg.sweep = str(run_dir)
        eval_cfg.paths.output_dir = str(run_dir / "evaluate")
        eval_cfg.paths.cache_dir = cfg.paths.cache_dir
        eval_cfg.logger = cfg.logger
    try:
        summary = evaluate_sweep(eval_cfg)
    except RunInterrupted:
        raise
    except (RunLoadError, ConfigError, FileNotFoundError, RuntimeError, ValueError) as exc:
        fail(RuntimeError(f"The evaluation failed (the run itself is complete): {exc}"), 2)
        return
    print(open(summary["headline"]).read())


def discard_unused_run_dir(run_dir: Path) -> None:
    """Remove the run folder of a run that failed before writing anything of its own (it holds
    only Hydra's .hydra/ and the log), so bad input leaves nothing behind."""
    if not run_dir.is_dir():
        return
    own = [p for p in run_dir.iterdir() if p.name != ".hydra" and p.suffix != ".log"]
    if not own:
        shutil.rmtree(run_dir, ignore_errors=True)


class JobFailed(RuntimeError):
    """One job of a multirun failed (already logged): it is recorded and the next job runs."""


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def fail(exc: BaseException, code: int) -> None:
    """Exit with ``code`` (a single run), or let a multirun go on to its next job."""
    log.error("%s", exc)
    if in_multirun() and not isinstance(exc, RunInterrupted):  # a signal stops the whole sweep
        raise JobFailed(str(exc)) from None
    sys.exit(code)


def run(cfg: DictConfig) -> float | None:
    """One run (one job of a multirun): train, evaluate when asked; the optimized metric."""
    with stop_on_signals():
        try:
            result = train(cfg)
            if cfg.get("evaluate") and int(cfg.flow.get("ensemble", 1)) > 1:
                with stage(
                    "evaluating the ensemble",
                    "the run itself is complete; evaluate it "
                    f"with `python evaluate.py sweep={result.output_dir}`",
                ):
                    evaluate_after_training(cfg, result.output_dir)
        except RunInterrupted as exc:
            fail(exc, exc.exit_code)  # 143 SIGTERM, 130 SIGINT, as a shell or Slurm reports it
        except (ConfigError, NonFiniteLossError, FileNotFoundError, OSError) as exc:
            discard_unused_run_dir(Path(cfg.paths.output_dir))
            fail(exc, 2)
    return optimized_value(result.metrics, cfg.get("optimized_metric"), result.output_dir)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """A single run exits non-zero when it fails. A job of a multirun records its outcome in
    ``<sweep>/jobs/`` and returns: a failed job gives the sweeper NaN (Optuna counts the trial
    as failed) and the next job runs; ``__main__`` then names the failed jobs and exits 1."""
    job = JobRecord.of_current_job()
    if job is None:
        return run(cfg)
    job.write("running")
    try:
        value = run(cfg)
    except JobFailed as exc:  # already logged
        job.write("failed", error=str(exc))
        return math.nan
    except Exception as exc:  # an unexpected error: its traceback goes to the job's log
        log.exception("The job failed")
        job.write("failed", error=f"{type(exc).__name__}: {exc}")
        return math.nan
    except BaseException as exc:  # a signal stops the whole multirun
        job.write("interrupted", error=f"{type(exc).__name__}: {exc}")
        raise
    job.write(FINISHED, objective=value)
    return value


def multirun_exit_code() -> int:
    """1 with the list of failed jobs on stderr when a multirun of this process had any."""
    for sweep_dir in ENDED_SWEEPS:
        if summary := sweep_summary(sweep_dir):
            print(summary, file=sys.stderr)
            return 1
    return 0


def optimized_value(metrics: dict, key: str | None, run_dir: Path | None = None) -> float | None:
    """The value of ``optimized_metric`` a sweeper minimises or maximises: the run's own, or for
    an ensemble (``run_dir`` holds members.json) the mean over its members; None (with a warning
    naming the keys there are) when the run did not measure it."""
    if key is None:
        return None
    members = ensemble_member_metrics(run_dir) if key not in metrics and run_dir else []
    if members:  # an ensemble's own metrics.json holds no member's measurements
        values = [m.get(key) for m in members]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            return float(sum(values) / len(values))
        metrics = members[0]  # the warning names the keys a member has
    value = metrics.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        numbers = sorted(k for k, v in metrics.items() if isinstance(v, (int, float)))
        log.warning(
            "optimized_metric=%s is not a number this run measured; the sweeper gets "
            "nothing. Choose one of: %s",
            key,
            ", ".join(numbers),
        )
        return None
    return float(value)


if __name__ == "__main__":
    if message := renamed_override_message(sys.argv[1:]) or missing_plugin_message(sys.argv[1:]):
        sys.exit(f"Error: {message}")
    main()
    sys.exit(multirun_exit_code())
