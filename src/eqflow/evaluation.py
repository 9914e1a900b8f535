"""Re-measuring finished runs and evaluating sweeps (evaluate.py)."""
from __future__ import annotations

import json
import logging
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from eqflow import plots, study
from eqflow.callbacks import EndOfFitMetric
from eqflow.data.base import random_subset
from eqflow.metrics.lyapunov import REST_SPEED
from eqflow.results import read_metrics, write_json_atomic, write_text_atomic
from eqflow.runs import load_run
from eqflow.runs import load_config
from eqflow.sweeps import load_sweep, named_run_dirs, run_dirs

log = logging.getLogger(__name__)
CHAOS_COLUMNS = ["run", "lyapunov", "speed_normalised", "mean_speed", "source"]
LONG_HORIZON_COLUMNS = ["lyapunov_long_first", "lyapunov_long", "sustained"]


def chaos_columns(rows: list[dict]) -> list[str]:
    """The chaos table's columns; the long-horizon ones when they were measured."""
    return CHAOS_COLUMNS + [c for c in LONG_HORIZON_COLUMNS if rows and c in rows[0]]


def evaluate_run(run_dir: str | Path, output_dir: str | Path, loggers: list | None = None) -> dict:
    """Load a finished run and re-compute its end-of-fit metrics into ``output_dir``."""
    run = load_run(run_dir)
    output_dir = Path(output_dir)
    cfg = run.cfg.copy()
    cfg.paths.output_dir = str(output_dir)
    callbacks_cfg = OmegaConf.to_container(cfg.callbacks, resolve=True)
    trainer = SimpleNamespace(datamodule=run.datamodule, loggers=loggers or [], callbacks=[],
                              global_step=0, global_rank=0)
    for name, node in callbacks_cfg.items():
        if not node or "eqflow.callbacks" not in str(node.get("_target_", "")):
            continue
        callback = instantiate(node)
        if isinstance(callback, EndOfFitMetric):
            log.info("Measuring %s of %s", name, run_dir)
            callback.on_fit_end(trainer, run.flow)
    return read_metrics(output_dir)


def git_commit() -> str:
    """The source's commit, with ``-dirty`` when tracked files have changes; ``unknown`` outside git."""
    def git(*args):
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent)

    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def evaluate_sweep(cfg: DictConfig) -> dict:
    """Table 1, chaos, MMD over time and UMAP for the sweep at ``cfg.sweep``, written to
    ``cfg.paths.output_dir`` (Markdown, CSV, PNG, report.md, summary.json) and W&B."""
    from eqflow.config import EVALUATE_RULES, validate

    validate(cfg, EVALUATE_RULES)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind = _sweep_kind(cfg.sweep)
    if kind == "patterns":
        return evaluate_pattern_sweep(cfg)
    if kind == "creatures":
        return evaluate_creature_sweep(cfg)
    timings = {}
    t0 = time.perf_counter()
    sweep = load_sweep(cfg.sweep, cfg.paths.get("cache_dir"))
    timings["load_s"] = time.perf_counter() - t0
    log.info("Evaluating %d runs of %s (%d left out)", len(sweep.runs), sweep.root, len(sweep.failed))

    t = time.perf_counter()
    groups = study.build_groups(sweep, cfg.n_baselines, int(cfg.seed))
    points = study.fixed_points(sweep, int(cfg.n_points), int(cfg.seed))
    reps = study.representations(groups, points)
    table = study.table1(reps)
    names, sizes = list(reps), groups.sizes()
    write_text_atomic(out / "table1.md", study.table1_markdown(table, names, sizes))
    write_text_atomic(out / "table1.csv", study.table1_csv(table, names))
    timings["table1_s"] = time.perf_counter() - t

    t = time.perf_counter()
    rows = study.chaos(sweep, bool(cfg.chaos.recompute),
                       OmegaConf.to_container(cfg.chaos.settings), int(cfg.seed),
                       int(cfg.chaos.get("long_horizon", 0)))
    summary_chaos = study.chaos_summary(rows)
    columns = chaos_columns(rows)
    write_text_atomic(out / "chaos.csv", ",".join(columns) + "\n" + "".join(
        ",".join(f"{r[c]:.6g}" if isinstance(r[c], float) else str(r[c]) for c in columns)
        + "\n" for r in rows))
    plots.histogram({"raw": [r["lyapunov"] for r in rows],
                     "speed-normalised": [r["speed_normalised"] for r in rows]},
                    out / "lyapunov_hist.png", "largest Lyapunov exponent")
    timings["chaos_s"] = time.perf_counter() - t

    t = time.perf_counter()
    first = sweep.runs[0]
    g = torch.Generator().manual_seed(int(cfg.seed))
    start = first.flow.score_model.noise(random_subset(first.datamodule.x, int(cfg.mmd.n_points), g), g)
    curves = study.mmd_curves(groups, start, float(cfg.mmd.dt), int(cfg.mmd.steps),
                              float(cfg.mmd.bandwidth))
    times = [float(cfg.mmd.dt) * k for k in range(int(cfg.mmd.steps) + 1)]
    plots.curves({k: c.mean(0) for k, c in curves.items()}, out / "mmd.png", "time",
                 "MMD² to start", "Distribution preservation (mean ± std)",
                 x={k: times for k in curves},
                 bands={k: c.std(0) if len(c) > 1 else torch.zeros_like(c[0])
                        for k, c in curves.items()})
    write_text_atomic(out / "mmd_final.md", study.mmd_final_markdown(curves, times))
    timings["mmd_s"] = time.perf_counter() - t

    t = time.perf_counter()
    umap_path = None
    labels = [grp for grp, m in groups.members.items() for _ in m]
    try:
        emb = study_umap(reps, int(cfg.umap.n_neighbors), int(cfg.seed))
        umap_path = plots.embedding(emb, labels, out / "umap.png",
                                    "UMAP of flow representations (cosine)",
                                    marked=("ground truth", "score"))
    except ValueError as exc:
        log.warning("No UMAP: %s", exc)
    timings["umap_s"] = time.perf_counter() - t

    summary = {
        "sweep": str(sweep.root), "runs": sweep.names, "failed": sweep.failed,
        "group_sizes": sizes,
        "table1": {f"{a} | {b}": {"mean": m, "std": s} for (a, b), (m, s) in table.items()},
        "chaos": summary_chaos, "chaos_rows": rows,
        "mmd_final": {k: {"mean": float(c[:, -1].mean()),
                          "std": float(c[:, -1].std()) if len(c) > 1 else 0.0}
                      for k, c in curves.items()},
        "mmd_curves_mean": {k: c.mean(0).tolist() for k, c in curves.items()},
        "timings": timings, "commit": git_commit(),
    }
    write_json_atomic(summary, out / "summary.json")
    write_text_atomic(out / "report.md", report(cfg, sweep, summary, table, names, sizes, curves, times,
                                     umap_path is not None))
    log_to_wandb(cfg, sweep, summary, table, names, out)
    log.info("Evaluation written to %s", out)
    return summary


def _sweep_kind(path) -> str:
    """``patterns`` (Gray-Scott: Table 2), ``creatures`` (artificial life: speeds) or ``flows``
    (Table 1 study), from the first readable run config under ``path``."""
    from eqflow.creature_study import is_creature_run
    from eqflow.pattern_study import is_pattern_run
    from eqflow.runs import RunLoadError

    for run_dir in run_dirs(path):
        try:
            cfg = load_config(run_dir)
        except (RunLoadError, OSError, ValueError):
            continue
        if is_pattern_run(cfg):
            return "patterns"
        return "creatures" if is_creature_run(cfg) else "flows"
    return "flows"


def evaluate_creature_sweep(cfg: DictConfig) -> dict:
    """Speed and polarisation per icon over the artificial-life runs under ``cfg.sweep``."""
    from eqflow import creature_study as cs

    out = Path(cfg.paths.output_dir)
    root = Path(cfg.sweep)
    names = named_run_dirs(root)
    dirs = list(names)
    icons, failed = cs.collect(dirs, names)
    if not icons:
        raise RuntimeError(f"none of the {len(dirs)} runs under {root} has creature statistics: "
                           + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    md = cs.markdown(icons)
    write_text_atomic(out / "creatures.md", md)
    summary = {"sweep": str(root), "failed": failed, "commit": git_commit(), "icons": icons}
    write_json_atomic(summary, out / "summary.json")
    write_text_atomic(out / "report.md", "\n".join([
        f"# Evaluation of `{root}`", "", f"- commit: `{summary['commit']}`",
        f"- left out: {len(failed)}", *(f"  - `{k}`: {v}" for k, v in failed.items()), "",
        "## Creature motion per icon (mean ± std over runs)", "", md,
        "## Per run", "", cs.runs_markdown(icons),
        "Each run's animation and Figure 5 panels are in its own `figures/` folder.", ""]))
    log.info("Creature table written to %s", out / "creatures.md")
    return summary


def evaluate_pattern_sweep(cfg: DictConfig) -> dict:
    """Table 2 for the Gray-Scott runs under ``cfg.sweep``: Markdown, CSV, report.md, W&B."""
    from eqflow import pattern_study as ps

    out = Path(cfg.paths.output_dir)
    root = Path(cfg.sweep)
    names = named_run_dirs(root)
    dirs = list(names)
    start = time.perf_counter()
    columns, failed = ps.collect(dirs, names, bool(cfg.patterns.recompute), out / "runs")
    if not columns:
        raise RuntimeError(f"none of the {len(dirs)} runs under {root} has a Table 2 value: "
                           + "; ".join(f"{k}: {v}" for k, v in failed.items()))
    table = ps.summarise(columns)
    md = ps.markdown(table, columns)
    write_text_atomic(out / "table2.md", md)
    write_text_atomic(out / "table2.csv", ps.csv_text(table))
    summary = {"sweep": str(root), "failed": failed, "commit": git_commit(),
               "table2": {p: {r: {"mean": m, "std": sd, "n": n} for r, (m, sd, n) in rows.items()}
                          for p, rows in table.items()},
               "above_baseline_mean_plus_std": ps.beats_baselines(table),
               "timings": {"table2_s": time.perf_counter() - start}}
    write_json_atomic(summary, out / "summary.json")
    lines = [f"# Evaluation of `{root}`", "", f"- commit: `{summary['commit']}`",
             f"- runs evaluated: {sum(len(c['runs']) for c in columns.values())}; "
             f"left out: {len(failed)}", *(f"  - `{k}`: {v}" for k, v in failed.items()),
             "", "## Table 2: fidelity to the Gray-Scott dynamics", "", md, "[CSV](table2.csv)", "",
             "Training-free above each baseline's mean + 1 std: "
             + "; ".join(f"{p}: " + ", ".join(f"{row} {'yes' if ok else 'no'}"
                                              for row, ok in rows.items())
                         for p, rows in summary["above_baseline_mean_plus_std"].items()), "",
             "Each run's Figure 3 panels and SDE animation are in its own `figures/` folder.", "",
             "## Configuration", "", "```yaml", OmegaConf.to_yaml(cfg).strip(), "```", ""]
    write_text_atomic(out / "report.md", "\n".join(lines))
    if cfg.wandb.enabled:
        import wandb

        run_cfg = load_config(next(d for d in dirs if names[d] not in failed))
        group = str(run_cfg.get("name", "eqflow"))
        run = _evaluate_wandb_run(cfg, group, out)
        try:
            rows = [[p, r, m, sd, n] for p, rr in table.items() for r, (m, sd, n) in rr.items()]
            run.log({"table2": wandb.Table(columns=["pattern", "row", "mean", "std", "n"],
                                           data=rows)})
            for p, rr in table.items():
                for r, (m, _, _) in rr.items():
                    run.summary[f"table2/{p}/{r}"] = m
        finally:
            run.finish()
    log.info("Table 2 written to %s", out / "table2.md")
    return summary


def study_umap(reps: dict[str, torch.Tensor], n_neighbors: int, seed: int) -> np.ndarray:
    from eqflow.metrics.embedding import umap_embedding
    from eqflow.metrics.fidelity import align_signs

    ref = study.reference_of(reps)
    allreps = torch.cat([align_signs(r.double(), ref.double()) for r in reps.values()])
    return umap_embedding(allreps, n_neighbors, "cosine", seed)


def report(cfg, sweep, summary, table, names, sizes, curves, times, has_umap: bool) -> str:
    ch = summary["chaos"]
    run_cfg = sweep.runs[0].cfg
    lines = [f"# Evaluation of `{sweep.root}`", "",
             f"- commit: `{summary['commit']}`",
             f"- runs evaluated: {len(sweep.runs)}; left out: {len(sweep.failed)}",
             *(f"  - `{k}`: {v}" for k, v in sweep.failed.items()),
             f"- data: `{run_cfg.data._target_}`, score: `{run_cfg.score.model._target_}` "
             f"(t = {run_cfg.score.model.t}), flow: `{run_cfg.flow.model._target_}`",
             f"- N = {cfg.n_points} fixed points, baseline draws per group: "
             f"{cfg.n_baselines if cfg.n_baselines is not None else len(sweep.runs)}, seed {cfg.seed}",
             "", "## Table 1: |cos| between groups (mean ± std over pairs, sign-aligned)", "",
             study.table1_markdown(table, names, sizes), "[CSV](table1.csv)", "",
             "## Chaos: largest Lyapunov exponent of each flow", ""]
    if ch.get("n"):
        lines += [f"- positive: {ch['n_positive']} of {ch['n']} flows "
                  f"({100 * ch['share_positive']:.0f} % of the {ch['n_finite']} with an estimate; "
                  f"a flow has none when all its trajectories leave the box |x| < bound)",
                  f"- raw: median {ch['median']:.4g}, range {ch['min']:.4g} .. {ch['max']:.4g}",
                  f"- speed-normalised: median {ch['speed_normalised_median']:.4g}, range "
                  f"{ch['speed_normalised_min']:.4g} .. {ch['speed_normalised_max']:.4g} (flows "
                  f"whose trajectories came to rest, mean speed < {REST_SPEED:g}, have none: "
                  f"{ch['n_at_rest']} of {ch['n']})",
                  *([f"- sustained over {cfg.chaos.long_horizon}x the horizon: {ch['n_sustained']} "
                     f"of {ch['n']} flows (exponent over the long horizon positive and at least "
                     f"{study.SUSTAINED_RATIO:g} of the same trajectories' over the first; linear "
                     f"separation, as in a shear, keeps about a third; `lyapunov_long_first` "
                     f"and `lyapunov_long` in the CSV)"]
                    if "n_sustained" in ch else []),
                  "", "![Lyapunov exponents](lyapunov_hist.png) ([CSV](chaos.csv))"]
    lines += ["", "## Distribution preservation: MMD² to the start set", "",
              study.mmd_final_markdown(curves, times), "![MMD over time](mmd.png)", ""]
    if has_umap:
        lines += ["## UMAP of all representations", "", "![UMAP](umap.png)", ""]
    lines += ["## Configuration", "", "```yaml", OmegaConf.to_yaml(cfg).strip(), "```", "",
              "Run configuration (first run):", "", "```yaml",
              OmegaConf.to_yaml(run_cfg).strip(), "```", ""]
    return "\n".join(lines)


def log_to_wandb(cfg, sweep, summary, table, names, out: Path) -> None:
    """One W&B run of job type ``evaluate`` in the sweep's group, with the tables and figures."""
    if not cfg.wandb.enabled:
        return
    import wandb

    run_cfg = sweep.runs[0].cfg
    wandb_cfg = (run_cfg.get("logger") or {}).get("wandb") or {}
    group = str(wandb_cfg.get("group") or run_cfg.get("name", "eqflow"))  # the runs' own group
    run = _evaluate_wandb_run(cfg, group, out)
    try:
        rows = [[a, b, *table[(a, b)]] for i, a in enumerate(names) for b in names[i:]]
        chaos_rows = summary["chaos_rows"]
        columns = chaos_columns(chaos_rows)
        run.log({"table1": wandb.Table(columns=["group_a", "group_b", "mean_abs_cos", "std_abs_cos"],
                                       data=rows),
                 "chaos": wandb.Table(columns=columns,
                                      data=[[r[c] for c in columns] for r in chaos_rows]),
                 **{f"figures/{p.stem}": wandb.Image(str(p)) for p in sorted(out.glob("*.png"))}})
        for k, v in summary["chaos"].items():
            run.summary[f"chaos/{k}"] = v
        for k, v in summary["mmd_final"].items():
            run.summary[f"mmd_final/{k}"] = v["mean"]
        for key, v in summary["table1"].items():
            run.summary[f"table1/{key}"] = v["mean"]
    finally:
        run.finish()


def _evaluate_wandb_run(cfg: DictConfig, group: str, out: Path):
    """The W&B run of job type ``evaluate`` in the runs' group, with the evaluate config."""
    import wandb

    return wandb.init(project=cfg.wandb.project, group=group, job_type="evaluate",
                      name=f"{group}-evaluate", dir=str(out),
                      mode="offline" if cfg.wandb.offline else "online",
                      config=json.loads(json.dumps(OmegaConf.to_container(cfg, resolve=True),
                                                   default=str)), reinit="finish_previous")
