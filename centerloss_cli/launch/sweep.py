"""Sweeps over lambda, alpha and seeds: every combination is an ordinary run, trained by a launcher (this
process, --jobs worker processes, one stacked model, or Slurm jobs), then one grid, table and plot.
"""
from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import math
import shutil
import statistics
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby, product
from pathlib import Path
from typing import Callable, Iterator, Sequence

from tqdm import tqdm

from ..dataset.fetch import data_fingerprint
from ..engine.runtime import Runtime, entered, show_bars
from ..errors import CenterLossError, ConfigError, Interrupted
from ..plots import charts, figures
from ..plots.report import write_report
from ..rundir.files import (
    CONFIG_JSON,
    MARK,
    RECORD,
    REPORT,
    SPLITS,
    contents,
    recorded_runs,
    sweep_dir,
    unproven,
    write_mark,
)
from ..rundir.folder import RunResult, completed, data_suffix, named_for_data
from ..rundir.lock import acquire
from ..rundir.storage import atomic_write_text
from ..settings.config import NAME_ACCEPTED, SCHEMA, SlurmConfig, TrainConfig
from ..settings.schema import NAME_MAX_BYTES, counted, is_folder_name, number_text
from .local import train_in_processes, train_in_turn

METRICS = ["test_acc", "train_intra", "train_inter", "train_ratio", "test_intra", "test_inter", "test_ratio"]
# Over seeds, these get a standard deviation beside their mean.
SPREAD = ["test_acc", "train_ratio", "test_ratio"]
# summary.csv's columns, by field name (lam); the file spells each setting by its key (lambda).
SUMMARY_COLUMNS = ["lam", "alpha", "seed", "epochs", *METRICS, *(f"{k}_std" for k in SPREAD), "run"]
MEAN = charts.MEAN_ROW
LAUNCHERS = ("local", "slurm")
GRID, COMPACTNESS = "grid_{split}.png", "compactness.png"  # a sweep's figures, unless its runs are --no-plots
FIGURES = (*(GRID.format(split=split) for split in SPLITS), COMPACTNESS, REPORT)


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
            v = kind(t) + kind(0)  # -0.0 is 0: "-0" names the sweep and its run as 0 does
        except ValueError:
            what = "a number" if kind is float else "an integer"
            raise ConfigError(f"{option} {text!r}: {t!r} is not {what}") from None
        if not math.isfinite(v):
            raise ConfigError(f"{option} {text!r}: {t!r} is not a finite number")
        if v in values:
            warn(f"{option}: {t} is listed twice; running it once")
            continue
        values.append(v)
    return values


def sweep_configs(base: TrainConfig, lams: Sequence[float], alphas: Sequence[float],
                  seeds: Sequence[int] | None = None, fingerprint: str | None = None) -> list[TrainConfig]:
    """One config per (lambda, alpha, seed), each named from its settings (and so checked) before anything
    runs; with the data's `fingerprint`, named for that data (rundir.folder.named_for_data)."""
    configs = [base.with_(lam=lam, alpha=alpha, seed=seed, name=None)
               for lam, alpha, seed in product(lams, alphas, seeds or [base.seed])]
    return configs if fingerprint is None else [named_for_data(c, fingerprint) for c in configs]


def default_sweep_name(base: TrainConfig, lams: Sequence[float], alphas: Sequence[float], seeds: Sequence[int],
                       suffix: str = "") -> str:
    """The values, in order, then the suffixes its runs share (other limits, another solver, other data):
    sweeps of other runs never share a folder. A name too long for the file system keeps its start and
    gains a digest of the whole."""
    name = (f"lambda{'-'.join(map(number_text, lams))}_alpha{'-'.join(map(number_text, alphas))}"
            f"_seed{'-'.join(map(str, seeds))}{base.identity_suffix}{suffix}")
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
    report: str = ""  # why the sweep's report.html was not written, where it was not


def run_sweep(
    base: TrainConfig,
    lams: Sequence[float],
    alphas: Sequence[float],
    seeds: Sequence[int] | None = None,
    *,
    jobs: int = 1,
    batched: bool = False,
    name: str | None = None,
    progress: bool = True,
    launcher: str = "local",
    slurm: SlurmConfig | None = None,
    wait: bool = False,
    runtime: Runtime | None = None,
) -> SweepResult | None:
    """Train every (lambda, alpha, seed) run that is not complete yet, then write the sweep's figures and tables.

    A finished run is skipped and an interrupted one resumed, so calling this again trains nothing.
    `batched` trains each seed's runs as one stacked model in this process instead. With launcher
    "slurm", each run (each seed's stack, with `batched`) is a Slurm job; this returns None once they
    are submitted, unless `wait`, and writes the outputs when called after they finish.
    """
    _check_options(base, lams, alphas, seeds, jobs, batched, name, launcher, wait)
    seeds = list(seeds or [base.seed])
    device = _local_device(base, launcher)
    with entered(runtime, sweep=True) as rt:
        configs, folder, fp = _named_runs(rt, base, lams, alphas, seeds, name, device)
        check_sweep_folder(folder)
        check_record(folder, configs)
        with claimed(folder, configs):
            if launcher == "slurm":
                launched = _run_on_slurm(rt, folder, configs, fp, slurm or SlurmConfig(), batched, wait, progress)
                if launched is None:
                    return None
                results, trained = launched
            else:
                results, trained = _run_locally(rt, configs, fp, jobs, batched, progress)
            return write_sweep_outputs(folder, [results[c.run_name] for c in configs], trained_runs=trained)


def _named_runs(rt: Runtime, base: TrainConfig, lams: Sequence[float], alphas: Sequence[float], seeds: list[int],
                name: str | None, device) -> tuple[list[TrainConfig], Path, str]:
    """The sweep's runs, its folder and its data's fingerprint, named once its settings are settled as its
    first run's are (engine.training.settle: fitted to the run's length, precision auto resolved, where a
    sweep begun elsewhere in the other precision goes on in its own)."""
    from ..engine.training import settle
    from ..settings.devices import emulated_bf16_warning

    fp = data_fingerprint(base.data_dir, base.verify, base.dataset, say=rt.say)
    first = sweep_configs(base, lams[:1], alphas[:1], seeds[:1])[0]
    settled = settle(first, device, resume=True, say=rt.say)
    base = base.with_(**{k: getattr(settled, k) for k in SCHEMA if getattr(settled, k) != getattr(first, k)})
    configs = sweep_configs(base, lams, alphas, seeds, fp)
    warning = emulated_bf16_warning(base, device, (configs[0].run_dir / CONFIG_JSON).is_file()) if device else None
    if warning:
        rt.say(warning)
    folder = sweep_dir(base.output_dir, name or default_sweep_name(base, lams, alphas, seeds,
                                                                   data_suffix(base.dataset, fp)))
    return configs, folder, fp


def _local_device(base: TrainConfig, launcher: str):
    """The device of this machine, checked before any run starts: a device that is not there is refused.
    With Slurm the jobs train elsewhere (a login node may have no GPU), so each job checks it where it
    runs, and this machine only resolves precision auto, which names the runs here."""
    from ..settings.devices import resolve_device

    if launcher == "slurm":
        if base.precision != "auto":
            return None
        try:
            return resolve_device(base.device)
        except CenterLossError:
            raise ConfigError(f"precision = 'auto' with --launcher slurm is resolved here, where the runs are named, "
                              f"and this machine has no {base.device}: give --precision bf16 or fp32") from None
    return resolve_device(base.device)


def _check_options(base: TrainConfig, lams: Sequence[float], alphas: Sequence[float], seeds: Sequence[int] | None,
                   jobs: int, batched: bool, name: str | None, launcher: str, wait: bool) -> None:
    """Every sweep option checked before anything runs."""
    for option, values in (("lams", lams), ("alphas", alphas), ("seeds", seeds)):
        if values is not None and not len(values):
            raise ConfigError(f"{option} = []: a sweep needs at least one value")
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if jobs < 1:
        raise ConfigError(f"jobs = {jobs}: expected an integer >= 1")
    if launcher == "slurm" and jobs > 1:
        raise ConfigError("--jobs runs local processes: with --launcher slurm, Slurm decides how many jobs run at once")
    if launcher == "local" and wait:
        raise ConfigError("--wait waits for Slurm jobs: give it with --launcher slurm")
    if launcher == "slurm" and not has_submitit():
        raise ConfigError("--launcher slurm submits through the submitit package, which this Python lacks "
                          "(pip install submitit)")
    if launcher == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--launcher slurm: sbatch is not on PATH (run this on a Slurm login node; "
                          "scripts/slurm_local.sh sets up a one-node Slurm on this machine)")
    if batched and jobs > 1:
        raise ConfigError("--batched trains every run in one process: it does not combine with --jobs")
    if name is not None and not is_folder_name(name):
        raise ConfigError(f"--sweep-name {name!r}: expected {NAME_ACCEPTED}")
    if not base.uses_alpha and len(alphas) > 1:
        raise ConfigError(f"--alpha {','.join(map(number_text, alphas))}: the caffe center update does not use α; "
                          "give one value")


def check_sweep_folder(folder: Path) -> None:
    """The sweep's folder, and OUTPUT_DIR/sweeps above it, are folders or can be: a file there is refused
    before any run trains (its outputs used to fail after all the training)."""
    for p in (folder.parent, folder):
        if (p.is_symlink() and not p.exists()) or (p.exists() and not p.is_dir()):
            raise CenterLossError(f"{p} is not a folder, where the sweep's outputs go; move it away, or give "
                                  "another --output-dir or --sweep-name")
    figures.check_figure_path(folder / GRID.format(split="test"))
    entries = contents(folder) if folder.is_dir() else set()
    if entries and not ({MARK, RECORD} & entries):
        raise CenterLossError(f"{unproven(folder, entries)} the sweep's outputs never go there; give another "
                              "--sweep-name or --output-dir")


@contextmanager
def claimed(folder: Path, configs: list[TrainConfig]) -> Iterator[None]:
    """The sweep's folder, made (or found to be the tool's) and locked until its outputs are written: a second
    sweep of the same name is refused while this one runs, rather than write its outputs over this one's."""
    folder.mkdir(parents=True, exist_ok=True)
    lock = acquire(folder, "sweep folder")
    try:
        check_record(folder, configs)  # again, now that no other sweep can write it
        write_mark(folder)
        yield
    finally:
        lock.release()


def check_record(folder: Path, configs: list[TrainConfig]) -> None:
    """A sweep folder holds one sweep: a sweep of other runs (other limits, other values) given the same
    --sweep-name is refused, not written over."""
    recorded = recorded_runs(folder)
    if recorded is None:
        return
    runs = [c.run_name for c in configs]
    if sorted(recorded) != sorted(runs):
        other = sorted(set(recorded) ^ set(runs))
        raise CenterLossError(f"sweep folder {folder} holds the outputs of a sweep of other runs (differing: "
                              f"{', '.join(other[:3])}{', ...' if len(other) > 3 else ''}); give another --sweep-name, "
                              "or move that folder away")


def _run_locally(rt: Runtime, configs: list[TrainConfig], fingerprint: str, jobs: int, batched: bool,
                 progress: bool) -> tuple[dict[str, RunResult], int]:
    results: dict[str, RunResult] = {}
    for c in configs:
        if (done := completed(c, fingerprint, rt.plots, rt.voice)) is not None:
            results[c.run_name] = done
    todo = [c for c in configs if c.run_name not in results]
    if todo:
        rt.say(f"sweep: {counted(len(configs), 'run')}, {len(results)} finished before, {len(todo)} to train")
    try:
        if batched:
            from ..engine.training import train_stacked  # imports torch: a --jobs sweep's parent never does

            # Stacked runs see the same batches, and the batch order is the seed's: one stack per seed.
            for seed in dict.fromkeys(c.seed for c in todo):
                for r in train_stacked([c for c in todo if c.seed == seed], runtime=rt, progress=progress):
                    results[r.run_dir.name] = r
        elif todo:
            _train_apart(rt, len(configs), todo, results, jobs, progress)
    except Interrupted as e:
        raise Interrupted(f"sweep stopped: {e.message}", e.signum, resume=rt.voice.sweep_again()) from None
    return results, len(todo)


def _train_apart(rt: Runtime, total: int, todo: list[TrainConfig], results: dict[str, RunResult], jobs: int,
                 progress: bool) -> None:
    """Train each run of `todo` as a model of its own: in turn here, or in `jobs` worker processes; each
    result goes into `results` as it comes, under a bar of the sweep's `total` runs."""
    bar = tqdm(total=total, initial=len(results), desc="sweep runs", unit="run", disable=not show_bars(progress),
               position=0, file=sys.stderr)

    def done(r: RunResult) -> None:
        results[r.run_dir.name] = r
        bar.update(1)
        if bar.disable:  # in a log file, where no bar is drawn, a line says how far the sweep is
            rt.say(f"sweep: {len(results)} of {counted(total, 'run')} done")

    with bar:
        if jobs > 1:
            train_in_processes(rt, todo, jobs, progress, done)
            return
        from ..engine.training import train

        for r in train_in_turn(rt, todo, train, progress, position=1):
            done(r)


def has_submitit() -> bool:
    """Whether this Python can submit to Slurm: a no-deps install (the GPU machine's) may lack submitit."""
    return importlib.util.find_spec("submitit") is not None


def _run_on_slurm(rt: Runtime, folder: Path, configs: list[TrainConfig], fingerprint: str, slurm: SlurmConfig,
                  batched: bool, wait: bool, progress: bool) -> tuple[dict[str, RunResult], int] | None:
    from ..engine.training import train_job
    from .slurm import run_on_slurm  # imports submitit

    return run_on_slurm(folder, configs, lambda c: completed(c, fingerprint, rt.plots, rt.voice), slurm,
                        batched=batched, wait=wait, progress=progress, say=rt.say, train=train_job)


def summary_rows(results: Sequence[RunResult]) -> list[dict[str, float | str]]:
    """One row per run, ordered by lambda, alpha and seed; after the runs of a (lambda, alpha) that has
    several seeds, a row of their means, with the standard deviation (n - 1) of SPREAD's metrics."""
    rows: list[dict[str, float | str]] = []
    ordered = sorted(results, key=lambda r: (r.config.lam, r.config.alpha, r.config.seed))
    for (lam, alpha), group in groupby(ordered, key=lambda r: (r.config.lam, r.config.alpha)):
        group = list(group)
        for r in group:
            f = r.final
            rows.append({"lam": lam, "alpha": alpha, "seed": r.config.seed, "epochs": int(f["epoch"]),
                         **{k: f[k] for k in METRICS}, **{f"{k}_std": "" for k in SPREAD}, "run": r.run_dir.name})
        if len(group) > 1:
            per_run = rows[-len(group):]
            rows.append({
                "lam": lam, "alpha": alpha, "seed": MEAN, "epochs": min(r["epochs"] for r in per_run),
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
        cells = [f"{r['lam']:g}", f"{r['alpha']:g}", f"mean ± std ({r['run']})" if mean else str(r["seed"]),
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
    """summary.csv, summary.md and, unless the runs are --no-plots, grid_train.png, grid_test.png and
    compactness.png under `folder`, and the record of which runs they are made of."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / RECORD, json.dumps({"runs": [r.run_dir.name for r in results]}, indent=2) + "\n")
    run_dirs = [r.run_dir for r in results]
    dpi, plots = results[0].config.plot_dpi, results[0].config.plots  # settings a sweep's runs share
    for split in SPLITS if plots else ():
        figures.grid_of_runs(run_dirs, folder / GRID.format(split=split), epoch="last", splits=(split,), dpi=dpi)
    rows = summary_rows(results)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([SCHEMA[c].key if c in SCHEMA else c for c in SUMMARY_COLUMNS])  # lam -> lambda, at the edge
    writer.writerows([[r[c] for c in SUMMARY_COLUMNS] for r in rows])
    atomic_write_text(folder / "summary.csv", buf.getvalue())
    table = markdown_table(rows)
    atomic_write_text(folder / "summary.md", table)
    report = ""
    if plots:
        charts.save_compactness_plot(folder / COMPACTNESS, rows, dpi=dpi)
        try:  # the sweep as one page (plots/report.py); a user's own report.html there is left alone
            write_report([folder], folder / REPORT, overwrite=True)
        except CenterLossError as e:
            report = f"report.html not written: {e}"
    return SweepResult(folder=folder, results=list(results), rows=rows, trained_runs=trained_runs, table=table,
                       report=report)


