"""Sweeps over lambda, alpha and seeds: every combination is an ordinary run, then one grid, table and plot."""
from __future__ import annotations

import csv
import hashlib
import io
import math
import os
import signal
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from itertools import groupby, product
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm import tqdm

from . import plots, runs
from .config import NAME_MAX_BYTES, TrainConfig, is_folder_name, number_text
from .data import MNIST
from .devices import resolve_device
from .errors import ConfigError, Interrupted
from .runs import RunResult, completed_result
from .storage import atomic_write_text
from .train import catch_stop_signals, load_data, stop_on_signals, train, train_stacked

METRICS = ["test_acc", "train_intra", "train_inter", "train_ratio", "test_intra", "test_inter", "test_ratio"]
# Over seeds, these get a standard deviation beside their mean.
SPREAD = ["test_acc", "train_ratio", "test_ratio"]
SUMMARY_COLUMNS = ["lambda", "alpha", "seed", "epochs", *METRICS, *(f"{k}_std" for k in SPREAD), "run"]
MEAN = plots.MEAN_ROW


def parse_values(text: str, option: str, warn: Callable[[str], None] = lambda msg: None,
                 kind: type = float) -> list[float]:
    """"0,0.001,0.01" -> [0.0, 0.001, 0.01] (kind=int: "0,1,2" -> [0, 1, 2]); duplicates are dropped with
    a warning, order is kept."""
    items = [t.strip() for t in text.split(",")]
    what = "numbers, e.g. 0,0.01,0.1" if kind is float else "integers, e.g. 0,1,2"
    if not text.strip() or any(not t for t in items):
        raise ConfigError(f"{option} {text!r}: expected a comma-separated list of {what}")
    values: list[float] = []
    for t in items:
        try:
            v = kind(t)
        except ValueError:
            raise ConfigError(f"{option} {text!r}: {t!r} is not {'a number' if kind is float else 'an integer'}") from None
        if not math.isfinite(v):
            raise ConfigError(f"{option} {text!r}: {t!r} is not a finite number")
        if v in values:
            warn(f"{option}: {t} is listed twice; running it once")
            continue
        values.append(v)
    return values


def sweep_configs(base: TrainConfig, lambdas: Sequence[float], alphas: Sequence[float],
                  seeds: Sequence[int] | None = None) -> list[TrainConfig]:
    """One config per (lambda, alpha, seed), each named from its settings (and so checked) before anything runs."""
    return [base.with_(lam=lam, alpha=alpha, seed=seed, name=None)
            for lam, alpha, seed in product(lambdas, alphas, seeds or [base.seed])]


def default_sweep_name(lambdas: Sequence[float], alphas: Sequence[float], seeds: Sequence[int]) -> str:
    """The values, in order; a name too long for the file system keeps its start and gains a digest of the whole."""
    name = (f"lambda{'-'.join(map(number_text, lambdas))}_alpha{'-'.join(map(number_text, alphas))}"
            f"_seed{'-'.join(map(str, seeds))}")
    if len(name.encode()) <= NAME_MAX_BYTES:
        return name
    return f"{name[:200]}_{hashlib.sha1(name.encode()).hexdigest()[:12]}"


@dataclass
class SweepResult:
    folder: Path
    results: list[RunResult]
    rows: list[dict[str, float | str]]
    trained_runs: int
    table: str


_STOPPED: Any = None  # in a --jobs worker: the sweep's stop event, set once the sweep was told to stop


def _start_worker(stopped: Any) -> None:
    global _STOPPED
    _STOPPED = stopped
    catch_stop_signals()  # a stop that arrives while a run is being set up must not kill the worker


def _train_in_worker(config: TrainConfig, threads: int, progress: bool, position: int) -> RunResult:
    # A run still queued when the sweep was stopped must not start: the pool hands a worker one call more
    # than it runs, which cancelling the futures cannot take back.
    if _STOPPED is not None and _STOPPED.is_set():
        raise Interrupted(f"run {config.run_name} not started")
    # Each worker gets its share of the cores, so `jobs` processes do not fight over them.
    torch.set_num_threads(threads)
    return train(config, resume=True, progress=progress, position=position, sweep=True)


def run_sweep(
    base: TrainConfig,
    lambdas: Sequence[float],
    alphas: Sequence[float],
    seeds: Sequence[int] | None = None,
    *,
    jobs: int = 1,
    batched: bool = False,
    name: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Train every (lambda, alpha, seed) run that is not complete yet, then write the sweep's figures and tables.

    A finished run is skipped and an interrupted one resumed, so calling this again trains nothing.
    `batched` trains the runs as one stacked model in this process (see batched.py) instead.
    """
    if jobs < 1:
        raise ConfigError(f"jobs = {jobs}: expected an integer >= 1")
    if batched and jobs > 1:
        raise ConfigError("--batched trains every run in one process: it does not combine with --jobs")
    if name is not None and not is_folder_name(name):
        raise ConfigError(f"--sweep-name {name!r}: expected a folder name without '/' of at most {NAME_MAX_BYTES} bytes")
    seeds = list(seeds or [base.seed])
    if base.center_update == "caffe" and len(alphas) > 1:
        raise ConfigError(f"--alpha {','.join(map(number_text, alphas))}: the caffe center update does not use α; give one value")
    configs = [runs.named_for_data(c) for c in sweep_configs(base, lambdas, alphas, seeds)]
    folder = runs.sweep_dir(base.output_dir, name or default_sweep_name(lambdas, alphas, seeds))
    plots.check_figure_path(folder / "grid_test.png")
    results: dict[str, RunResult] = {}
    for c in configs:
        if (done := completed_result(c, sweep=True)) is not None:
            results[c.run_name] = done
    todo = [c for c in configs if c.run_name not in results]
    try:
        if batched and todo:
            # Stacked runs see the same batches, and the batch order is the seed's: one stack per seed.
            for seed in dict.fromkeys(c.seed for c in todo):
                for r in train_stacked([c for c in todo if c.seed == seed], progress=progress):
                    results[r.run_dir.name] = r
        else:
            _train_all(todo, results, jobs, progress, already_done=len(configs) - len(todo))
    except Interrupted as e:
        raise Interrupted(f"sweep stopped: {e}. Run the same sweep command again to resume it", e.signum) from None
    return write_sweep_outputs(folder, [results[c.run_name] for c in configs], trained_runs=len(todo))


def _train_all(todo: list[TrainConfig], results: dict[str, RunResult], jobs: int, progress: bool, already_done: int) -> None:
    bar = tqdm(total=len(todo) + already_done, initial=already_done, desc="sweep runs", unit="run",
               disable=not progress, position=0, file=sys.stderr)
    with bar:
        if todo and jobs == 1:
            data: MNIST | None = None
            for c in todo:
                if data is None:  # loaded once, and only when some run still has to train
                    data = load_data(c, resolve_device(c.device))
                results[c.run_name] = train(c, resume=True, data=data, progress=progress, position=1, sweep=True)
                bar.update(1)
        elif todo:
            threads = max(1, (os.cpu_count() or 1) // jobs)
            context = get_context("spawn")
            stopped = context.Event()
            with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker, initargs=(stopped,)) as pool:

                def stop_workers(signum: int) -> None:
                    # Ctrl-C at a terminal reaches the workers too, but a `kill` of this process (or Slurm's
                    # SIGTERM to it alone) does not: pass the stop on, so no worker trains on as an orphan.
                    stopped.set()
                    for pid in list(pool._processes or {}):  # noqa: SLF001 - the pool offers no public list
                        try:
                            os.kill(pid, signal.SIGTERM)
                        except ProcessLookupError:
                            pass

                with stop_on_signals(stop_workers) as stop:
                    futures = {
                        pool.submit(_train_in_worker, c, threads, progress, 1 + i % jobs): c for i, c in enumerate(todo)
                    }
                    try:
                        for fut in as_completed(futures):
                            results[futures[fut].run_name] = fut.result()  # re-raises a worker's Interrupted
                            bar.update(1)
                            if stop:
                                raise Interrupted("stopped between runs; every finished run is saved", stop.signum)
                    except BaseException as e:
                        for fut in futures:
                            fut.cancel()  # runs not started yet must not start after a stop
                        if isinstance(e, Interrupted) and stop:
                            raise Interrupted(str(e), stop.signum) from None  # this process's signal decides
                        raise


def summary_rows(results: Sequence[RunResult]) -> list[dict[str, float | str]]:
    """One row per run, ordered by lambda, alpha and seed; after the runs of a (lambda, alpha) that has
    several seeds, a row of their means, with the standard deviation (n - 1) of SPREAD's metrics."""
    rows: list[dict[str, float | str]] = []
    ordered = sorted(results, key=lambda r: (r.config.lam, r.config.alpha, r.config.seed))
    for (lam, alpha), group in groupby(ordered, key=lambda r: (r.config.lam, r.config.alpha)):
        group = list(group)
        for r in group:
            f = r.final
            rows.append({"lambda": lam, "alpha": alpha, "seed": r.config.seed, "epochs": int(f["epoch"]),
                         **{k: f[k] for k in METRICS}, **{f"{k}_std": "" for k in SPREAD}, "run": r.run_dir.name})
        if len(group) > 1:
            per_run = rows[-len(group):]
            rows.append({
                "lambda": lam, "alpha": alpha, "seed": MEAN, "epochs": min(r["epochs"] for r in per_run),
                **{k: statistics.fmean(r[k] for r in per_run) for k in METRICS},
                **{f"{k}_std": statistics.stdev(r[k] for r in per_run) for k in SPREAD},
                "run": f"{len(group)} seeds",
            })
    return rows


def markdown_table(rows: Sequence[dict[str, float | str]]) -> str:
    head = ("| λ | α | seed | epochs | test acc | train intra | train inter | train ratio | test intra | test inter "
            "| test ratio |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        mean = r["seed"] == MEAN
        cells = [f"{r['lambda']:g}", f"{r['alpha']:g}", f"mean ± std ({r['run']})" if mean else str(r["seed"]),
                 str(r["epochs"])]
        for k in METRICS:
            text = f"{100 * r[k]:.2f}" if k == "test_acc" else f"{r[k]:.3f}"
            if mean and k in SPREAD:
                text += f" ± {text_std(k, r)}"
            cells.append(text + ("%" if k == "test_acc" else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def text_std(key: str, row: dict[str, float | str]) -> str:
    std = float(row[f"{key}_std"])
    return f"{100 * std:.2f}" if key == "test_acc" else f"{std:.3f}"


def write_sweep_outputs(folder: Path, results: Sequence[RunResult], trained_runs: int = 0) -> SweepResult:
    """grid_train.png, grid_test.png, summary.csv, summary.md and compactness.png under `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    run_dirs = [r.run_dir for r in results]
    for split in runs.SPLITS:
        plots.grid_of_runs(run_dirs, folder / f"grid_{split}.png", epoch="last", splits=(split,))
    rows = summary_rows(results)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder / "summary.csv", buf.getvalue())
    table = markdown_table(rows)
    atomic_write_text(folder / "summary.md", table)
    plots.save_compactness_plot(folder / "compactness.png", rows)
    return SweepResult(folder=folder, results=list(results), rows=rows, trained_runs=trained_runs, table=table)
