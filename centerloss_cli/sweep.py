"""Sweeps over lambda, alpha and seeds: every combination is an ordinary run, then one grid, table and plot."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from itertools import groupby, product
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from tqdm import tqdm

from . import plots, runs
from .config import NAME_MAX_BYTES, SlurmConfig, TrainConfig, is_folder_name, number_text, sbatch_options
from .data import MNIST
from .devices import resolve_device
from .errors import CenterLossError, ConfigError, Interrupted, SweepFailed, stop_signals_blocked, unblock_stop_signals
from .runs import RunResult, completed_result
from .storage import atomic_write_text
from .train import catch_stop_signals, load_data, show_bars, stop_on_signals, train, train_stacked

METRICS = ["test_acc", "train_intra", "train_inter", "train_ratio", "test_intra", "test_inter", "test_ratio"]
# Over seeds, these get a standard deviation beside their mean.
SPREAD = ["test_acc", "train_ratio", "test_ratio"]
SUMMARY_COLUMNS = ["lambda", "alpha", "seed", "epochs", *METRICS, *(f"{k}_std" for k in SPREAD), "run"]
MEAN = plots.MEAN_ROW
LAUNCHERS = ("local", "slurm")


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
    unblock_stop_signals()  # started with them blocked (see _train_all): a signal held back arrives now


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
    launcher: str = "local",
    slurm: SlurmConfig | None = None,
    wait: bool = False,
    say: Callable[[str], None] = print,
) -> SweepResult | None:
    """Train every (lambda, alpha, seed) run that is not complete yet, then write the sweep's figures and tables.

    A finished run is skipped and an interrupted one resumed, so calling this again trains nothing.
    `batched` trains the runs as one stacked model in this process (see batched.py) instead. With
    launcher "slurm", each run (each seed's stack, with `batched`) is a Slurm job instead; this returns
    None once they are submitted, unless `wait`, and writes the outputs when called after they finish.
    """
    if launcher not in LAUNCHERS:
        raise ConfigError(f"--launcher {launcher!r}: expected one of {', '.join(LAUNCHERS)}")
    if jobs < 1:
        raise ConfigError(f"jobs = {jobs}: expected an integer >= 1")
    if launcher == "slurm" and jobs > 1:
        raise ConfigError("--jobs runs local processes: with --launcher slurm, Slurm decides how many jobs run at once")
    if launcher == "local" and wait:
        raise ConfigError("--wait waits for Slurm jobs: give it with --launcher slurm")
    if launcher == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError("--launcher slurm: sbatch is not on PATH (run this on a Slurm login node; "
                          "scripts/slurm_local.sh sets up a one-node Slurm on this machine)")
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
    if launcher == "slurm":
        return run_sweep_on_slurm(folder, configs, slurm or SlurmConfig(), batched=batched, wait=wait,
                                  progress=progress, say=say)
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


def train_in_turn(configs: Sequence[TrainConfig], progress: bool, position: int | None = None) -> Iterator[RunResult]:
    """Train (or resume, or skip when finished) each run in this process, one after another, yielding
    each result as it comes; the data is loaded once, and only when some run still has to train."""
    data: MNIST | None = None
    for c in configs:
        if data is None:
            data = load_data(c, resolve_device(c.device))
        yield train(c, resume=True, data=data, progress=progress, position=position, sweep=True)


def _train_all(todo: list[TrainConfig], results: dict[str, RunResult], jobs: int, progress: bool, already_done: int) -> None:
    bar = tqdm(total=len(todo) + already_done, initial=already_done, desc="sweep runs", unit="run",
               disable=not show_bars(progress), position=0, file=sys.stderr)
    with bar:
        if todo and jobs == 1:
            for r in train_in_turn(todo, progress, position=1):
                results[r.run_dir.name] = r
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
                    with stop_signals_blocked():  # the workers start here, and handle stops once they can
                        futures = {pool.submit(_train_in_worker, c, threads, progress, 1 + i % jobs): c
                                   for i, c in enumerate(todo)}
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


# --- the Slurm launcher: one job per run (one per seed with --batched), through submitit ---------------

SLURM_FOLDER = "slurm"  # under the sweep's folder: submitit's pickles and the jobs' logs
JOBS_FILE = "jobs.json"  # the sweep's state there: which job trains which runs
# Requeues of one job after a stop signal (preemption, a time limit): each saves progress, so this only
# guards against a time limit too short for any progress at all.
MAX_REQUEUES = 20


@dataclass
class SlurmTask:
    """What one Slurm job runs: its runs, resumed from their checkpoints (a requeued job starts here too)."""

    configs: list[TrainConfig]
    batched: bool

    def __call__(self) -> list[str]:
        catch_stop_signals()  # Slurm's SIGTERM (preemption) and SIGUSR2 (time limit) stop at a batch boundary
        if cpus := os.environ.get("SLURM_CPUS_PER_TASK"):
            torch.set_num_threads(int(cpus))  # the CPUs the job was given, not the node's
        try:
            if self.batched:
                return [str(r.run_dir) for r in train_stacked(self.configs, progress=False)]
            return [str(r.run_dir) for r in train_in_turn(self.configs, progress=False)]
        except Interrupted as e:
            if e.signum == signal.SIGINT:
                raise
            _requeue(e)
            raise  # not reached


def _requeue(stopped: Interrupted) -> None:
    """Put this job back in the queue: its checkpoints are saved, and the job resumes them when it runs
    again. Exiting by SystemExit leaves no result file, so submitit sees the job as not finished."""
    import submitit

    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    job = submitit.JobEnvironment().job_id
    if restarts >= MAX_REQUEUES:
        raise CenterLossError(f"{stopped}; job {job} was requeued {restarts} times already: not again "
                          "(is --time-limit long enough for an epoch?)") from None
    print(f"{stopped}\nrequeueing job {job} (restart {restarts + 1}); it resumes from the checkpoint", flush=True)
    requeued = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if requeued.returncode != 0:  # a preemption that requeues by itself leaves nothing to do
        print(f"scontrol requeue {job}: {requeued.stderr.strip()}", flush=True)
    sys.exit(stopped.exit_code)


@dataclass
class SlurmJobRecord:
    job_id: str
    runs: list[str]


def _jobs_path(folder: Path) -> Path:
    return folder / SLURM_FOLDER / JOBS_FILE


def read_jobs(folder: Path) -> list[SlurmJobRecord]:
    path = _jobs_path(folder)
    if not path.is_file():
        return []
    try:
        return [SlurmJobRecord(**j) for j in json.loads(path.read_text())["jobs"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{path}: cannot read the sweep's Slurm jobs ({e}); delete it to submit afresh") from None


def _write_jobs(folder: Path, jobs: Sequence[SlurmJobRecord]) -> None:
    path = _jobs_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"jobs": [asdict(j) for j in jobs]}, indent=2) + "\n")


def _submitit_job(folder: Path, job_id: str) -> Any:
    import submitit

    return submitit.SlurmJob(folder=folder / SLURM_FOLDER, job_id=job_id)


def job_states(folder: Path, job_ids: Sequence[str]) -> dict[str, str]:
    """Each job's Slurm state (PENDING, RUNNING, COMPLETED, FAILED, TIMEOUT, ...): one sacct call for all,
    through submitit; a job that sacct does not know yet is asked of squeue, and one that neither knows
    is GONE."""
    jobs = {i: _submitit_job(folder, i) for i in job_ids}
    if jobs:
        next(iter(jobs.values())).watcher.update()
    states = {i: (j.get_info(mode="cache").get("State") or "UNKNOWN").split()[0] for i, j in jobs.items()}
    for i in [i for i, st in states.items() if st == "UNKNOWN"]:
        queued = subprocess.run(["squeue", "-h", "-j", i, "-o", "%T"], capture_output=True, text=True)
        states[i] = (queued.stdout.split() or ["GONE"])[0] if queued.returncode == 0 else "GONE"
    return states


def job_log(folder: Path, job_id: str) -> Path:
    return _submitit_job(folder, job_id).paths.stderr


def job_failure(folder: Path, job_id: str) -> str:
    """The last line of a failed job's traceback (for our own errors, their one-line message)."""
    job = _submitit_job(folder, job_id)
    error = job.exception() if job.paths.result_pickle.exists() else None
    trace = str(error or "").rsplit("\n------", 1)[0]  # submitit adds a footer about where the logs are
    lines = [ln.strip() for ln in trace.splitlines() if ln.strip()]
    if not lines:
        return "no result: see the log"
    last = lines[-1]
    # Our own errors are one line meant for the user: drop the class's module path.
    return last.split(": ", 1)[1] if last.startswith("centerloss_cli.errors.") and ": " in last else last


ACTIVE_STATES = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESIZING", "SUSPENDED",
                 "CONFIGURING", "COMPLETING", "PREEMPTED", "STAGE_OUT", "SIGNALING"}


def submit_to_slurm(folder: Path, groups: Sequence[list[TrainConfig]], slurm: SlurmConfig,
                    batched: bool) -> list[SlurmJobRecord]:
    """One Slurm job array, a job per group of runs; logs and submitit's files under folder/slurm/."""
    import submitit

    executor = submitit.SlurmExecutor(folder=folder / SLURM_FOLDER)
    params: dict[str, Any] = {"job_name": f"centerloss-{folder.name}"[:100], "time": slurm.time_limit,
                              "cpus_per_task": slurm.cpus, "mem": f"{math.ceil(slurm.mem_gb * 1024)}M"}
    if slurm.gpus:
        params["gpus_per_node"] = slurm.gpus
    if slurm.partition:
        params["partition"] = slurm.partition
    if slurm.account:
        params["account"] = slurm.account
    if extra := sbatch_options(slurm.sbatch):
        params["additional_parameters"] = extra
    executor.update_parameters(**params)
    logs = folder / SLURM_FOLDER
    before = set(logs.iterdir()) if logs.is_dir() else set()
    try:
        jobs = executor.submit_array([SlurmTask(list(g), batched) for g in groups])
    except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError) as e:
        for made in set(logs.iterdir()) - before:  # the pickles and script of jobs that never existed
            made.unlink()
        raise ConfigError(f"sbatch refused the sweep's jobs: {str(e).strip().splitlines()[-1]}") from None
    return [SlurmJobRecord(job.job_id, [c.run_name for c in g]) for job, g in zip(jobs, groups)]


def run_sweep_on_slurm(folder: Path, configs: list[TrainConfig], slurm: SlurmConfig, *, batched: bool, wait: bool,
                       progress: bool, say: Callable[[str], None]) -> SweepResult | None:
    """Submit every run that is neither finished nor in a live job, and once all have finished, write the
    sweep's outputs. Returns None while jobs are still out (after submitting, without `wait`)."""
    records = read_jobs(folder)
    state = job_states(folder, [j.job_id for j in records])
    live = [j for j in records if state[j.job_id] in ACTIVE_STATES]
    in_flight = {name for j in live for name in j.runs}  # their folders are locked by the jobs: not opened here
    results: dict[str, RunResult] = {}
    for c in configs:
        if c.run_name not in in_flight and (done := completed_result(c, sweep=True)) is not None:
            results[c.run_name] = done
    todo = [c for c in configs if c.run_name not in results and c.run_name not in in_flight]
    again = {c.run_name for c in todo}
    for j in records:
        if j not in live and (failed := [n for n in j.runs if n in again]):
            say(f"job {j.job_id} ({state[j.job_id]}) did not finish {', '.join(failed)}: "
                f"{job_failure(folder, j.job_id)}; log: {job_log(folder, j.job_id)}; submitting it again")
    if todo:
        seeds = dict.fromkeys(c.seed for c in todo)  # stacked runs share the batch order, the seed's
        groups = [[c for c in todo if c.seed == s] for s in seeds] if batched else [[c] for c in todo]
        submitted = submit_to_slurm(folder, groups, slurm, batched)
        _write_jobs(folder, [j for j in records if not set(j.runs) & again] + submitted)
        live += submitted
        first, last = submitted[0].job_id, submitted[-1].job_id
        say(f"submitted {len(submitted)} Slurm job(s) for {len(todo)} run(s): {first}"
            + (f" .. {last}" if last != first else "") + f"; logs in {folder / SLURM_FOLDER}/")
    if live and not wait:
        say(f"follow them with: squeue -j {','.join(dict.fromkeys(j.job_id.split('_')[0] for j in live))}"
            f"   (a job's log: {job_log(folder, live[0].job_id)})\n"
            "run the same command again once they have ended, or add --wait, for the sweep's figures and summary")
        return None
    if live:
        _wait_for(folder, live, len(configs), progress)
        unfinished = [c for c in configs if completed_result(c, sweep=True) is None]
        if unfinished:
            failed = {c.run_name for c in unfinished}
            state = job_states(folder, [j.job_id for j in live])
            lines = [f"job {j.job_id} ({state[j.job_id]}): {job_failure(folder, j.job_id)}; log: {job_log(folder, j.job_id)}"
                     for j in live if set(j.runs) & failed]
            raise SweepFailed(f"{len(unfinished)} run(s) did not finish:\n  " + "\n  ".join(lines)
                              + "\nrun the same command again to submit them again")
        results = {c.run_name: completed_result(c, sweep=True) for c in configs}
    return write_sweep_outputs(folder, [results[c.run_name] for c in configs], trained_runs=len(in_flight | again))


def _wait_for(folder: Path, jobs: Sequence[SlurmJobRecord], total: int, progress: bool) -> None:
    """Block until every job has ended, with a bar over the runs of ended jobs."""
    pending = list(jobs)
    bar = tqdm(total=total, initial=total - sum(len(j.runs) for j in jobs), desc="slurm runs", unit="run",
               disable=not show_bars(progress), file=sys.stderr)
    with bar:
        while pending:
            time.sleep(2)
            state = job_states(folder, [j.job_id for j in pending])
            for j in [j for j in pending if state[j.job_id] not in ACTIVE_STATES]:
                pending.remove(j)
                bar.update(len(j.runs))
