"""The Slurm launcher of a sweep: each run (each seed's stack, with --batched) one job of a Slurm job
array, submitted through submitit; preempted or timed-out jobs save, requeue themselves and resume.
"""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm import tqdm

from ..engine.runtime import Runtime, show_bars
from ..errors import CenterLossError, ConfigError, Interrupted, SweepFailed
from ..rundir.folder import RunResult
from ..rundir.storage import atomic_write_text
from ..settings.config import SlurmConfig, TrainConfig, sbatch_options
from ..settings.schema import counted
from ..settings.voice import Voice

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
    train: Callable[..., list[RunResult]]  # engine.training.train_job, handed down by the sweep (pickled by name)

    def __call__(self) -> list[str]:
        import torch

        if cpus := os.environ.get("SLURM_CPUS_PER_TASK"):
            torch.set_num_threads(int(cpus))  # the CPUs the job was given, not the node's
        # The job's own runtime: Slurm's SIGTERM (preemption) and SIGUSR2 (time limit) stop at a batch boundary.
        rt = Runtime(voice=Voice(sweep=True))
        try:
            with rt:
                return [str(r.run_dir) for r in self.train(self.configs, self.batched, rt)]
        except Interrupted as e:
            if e.signum == signal.SIGINT:
                raise
            _requeue(e, rt.say)
            raise  # not reached
        finally:
            rt.close()


def _requeue(stopped: Interrupted, say: Callable[[str], None]) -> None:
    """Put this job back in the queue: its checkpoints are saved, and the job resumes them when it runs
    again. Exiting by SystemExit leaves no result file, so submitit sees the job as not finished."""
    import submitit

    restarts = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
    job = submitit.JobEnvironment().job_id
    if restarts >= MAX_REQUEUES:
        raise CenterLossError(f"{stopped}; job {job} was requeued {restarts} times already: not again "
                          "(is --time-limit long enough for an epoch?)") from None
    say(f"{stopped}\nrequeueing job {job} (restart {restarts + 1}); it resumes from the checkpoint")
    requeued = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if requeued.returncode != 0:  # a preemption that requeues by itself leaves nothing to do
        say(f"scontrol requeue {job}: {requeued.stderr.strip()}")
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


def submit_to_slurm(folder: Path, groups: Sequence[list[TrainConfig]], slurm: SlurmConfig, batched: bool,
                    train: Callable[..., list[RunResult]]) -> list[SlurmJobRecord]:
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
        jobs = executor.submit_array([SlurmTask(list(g), batched, train) for g in groups])
    except (subprocess.CalledProcessError, submitit.core.utils.FailedJobError) as e:
        for made in set(logs.iterdir()) - before:  # the pickles and script of jobs that never existed
            made.unlink()
        raise ConfigError(f"sbatch refused the sweep's jobs: {str(e).strip().splitlines()[-1]}") from None
    return [SlurmJobRecord(job.job_id, [c.run_name for c in g]) for job, g in zip(jobs, groups)]


def run_on_slurm(folder: Path, configs: list[TrainConfig], finished: Callable[[TrainConfig], RunResult | None],
                 slurm: SlurmConfig, *, batched: bool, wait: bool, progress: bool, say: Callable[[str], None],
                 train: Callable[..., list[RunResult]]) -> tuple[dict[str, RunResult], int] | None:
    """Submit every run that is neither finished (`finished` gives its result) nor in a live job. Once all
    have finished: their results by name, and how many trained in jobs of this sweep. None while jobs
    are still out (after submitting, without `wait`)."""
    records = read_jobs(folder)
    state = job_states(folder, [j.job_id for j in records])
    live = [j for j in records if state[j.job_id] in ACTIVE_STATES]
    in_flight = {name for j in live for name in j.runs}  # their folders are locked by the jobs: not opened here
    results: dict[str, RunResult] = {}
    for c in configs:
        if c.run_name not in in_flight and (done := finished(c)) is not None:
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
        submitted = submit_to_slurm(folder, groups, slurm, batched, train)
        _write_jobs(folder, [j for j in records if not set(j.runs) & again] + submitted)
        live += submitted
        first, last = submitted[0].job_id, submitted[-1].job_id
        say(f"submitted {counted(len(submitted), 'Slurm job')} for {counted(len(todo), 'run')}: {first}"
            + (f" .. {last}" if last != first else "") + f"; logs in {folder / SLURM_FOLDER}/")
    if live and not wait:
        say(f"follow them with: squeue -j {','.join(dict.fromkeys(j.job_id.split('_')[0] for j in live))}"
            f"   (a job's log: {job_log(folder, live[0].job_id)})\n"
            "run the same command again once they have ended, or add --wait, for the sweep's figures and summary")
        return None
    if live:
        _wait_for(folder, live, len(configs), progress)
        results = {c.run_name: done for c in configs if (done := finished(c)) is not None}
        if len(results) < len(configs):
            failed = {c.run_name for c in configs} - set(results)
            state = job_states(folder, [j.job_id for j in live])
            lines = [f"job {j.job_id} ({state[j.job_id]}): {job_failure(folder, j.job_id)}; "
                     f"log: {job_log(folder, j.job_id)}" for j in live if set(j.runs) & failed]
            raise SweepFailed(f"{counted(len(failed), 'run')} did not finish:\n  " + "\n  ".join(lines)
                              + "\nrun the same command again to submit them again")
    return results, len(in_flight | again)


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
