"""`sweep --launcher slurm` against a real Slurm: scripts/slurm_local.sh brings one up on this machine
(.ci/run does, before its second `make test`). Skipped where no Slurm controller answers, unless
CENTERLOSS_TEST_SLURM=required (as .ci/run sets once Slurm is up), which makes that a failure."""
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import assert_same_run, tiny


def _no_slurm() -> str | None:
    """Why these tests cannot run here, or None. Slurm's clients can be installed with no controller
    running (a machine where Slurm was set up once, whose daemons have since stopped)."""
    remedy = "run scripts/slurm_local.sh (as root) to bring up a local Slurm"
    if shutil.which("sbatch") is None:
        return f"sbatch is not on PATH: {remedy}"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`scontrol ping` failed ({e}): {remedy}"
    if ping.returncode != 0 or "UP" not in ping.stdout:
        first = (ping.stdout or ping.stderr).strip().splitlines()[:1]
        return f"no Slurm controller answers ({first[0] if first else 'scontrol ping failed'}): {remedy}"
    return None


NO_SLURM = _no_slurm()
if NO_SLURM and os.environ.get("CENTERLOSS_TEST_SLURM") == "required":
    raise RuntimeError(f"CENTERLOSS_TEST_SLURM=required, but {NO_SLURM}")

# Slurm runs each job as a whole process: these tests are out of the quick lane, where a Slurm is up as well.
pytestmark = [pytest.mark.slurm, pytest.mark.process, pytest.mark.skipif(NO_SLURM is not None, reason=str(NO_SLURM))]

# One CPU per job, so the two jobs of a sweep run at once on a 2-core machine; the local runs that
# they are compared with train on one thread too (CPU results depend on the thread count).
ONE_CPU = ["--launcher", "slurm", "--cpus", "1", "--mem-gb", "1"]


@pytest.fixture
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def same_runs(a: Path, b: Path) -> None:
    assert_same_run(a, b, threads=1)  # both trained on one thread


def submitted_job(output: str) -> str:
    """The first job id of 'submitted 1 Slurm job for 1 run: 12_0; logs in ...'."""
    return re.search(r"Slurm jobs? for \d+ runs?: ([^;\s]+)", output).group(1)


def test_a_slurm_sweep_gives_the_same_sweep_folder_as_a_local_one(run_cli, mnist, one_thread):
    sweep = ["sweep", "--lambda", "0,0.1", *mnist.args, *tiny(epochs=2)]
    local = run_cli(*sweep, "--output-dir", "local")
    assert local.exit_code == 0, local.output
    submitted = run_cli(*sweep, "--output-dir", "slurm", *ONE_CPU)
    assert submitted.exit_code == 0, submitted.output
    assert "submitted 2 Slurm jobs for 2 runs" in submitted.output and "squeue -j" in submitted.output
    assert not list(Path("slurm/sweeps").glob("*/summary.csv"))  # it returned once the jobs were submitted
    waited = run_cli(*sweep, "--output-dir", "slurm", *ONE_CPU, "--wait")
    assert waited.exit_code == 0, waited.output
    (name,) = [p.name for p in Path("local/sweeps").iterdir()]
    for lam in (0.0, 0.1):
        same_runs(mnist.run("local", lam=lam), mnist.run("slurm", lam=lam))
    summary = [(Path(where) / "sweeps" / name / "summary.md").read_text() for where in ("local", "slurm")]
    assert summary[0] == summary[1]
    assert {p.name for p in (Path("slurm/sweeps") / name).iterdir()} == \
        {p.name for p in (Path("local/sweeps") / name).iterdir()} | {"slurm"}
    again = run_cli(*sweep, "--output-dir", "slurm", *ONE_CPU)  # all finished: nothing submitted
    assert again.exit_code == 0 and "submitted" not in again.output and "2 runs" in again.output


def test_a_job_sent_sigterm_is_requeued_and_ends_bit_identical(run_cli, mnist, one_thread):
    settings = tiny(epochs=12)
    reference = run_cli("train", *mnist.args, *settings, "--output-dir", "local")
    assert reference.exit_code == 0, reference.output
    sweep = ["sweep", "--lambda", "0.01", *mnist.args, *settings, "--output-dir", "slurm", *ONE_CPU]
    submitted = run_cli(*sweep)
    assert submitted.exit_code == 0, submitted.output
    job = submitted_job(submitted.output)
    run = mnist.run("slurm")
    deadline = time.monotonic() + 120
    while not ((run / "metrics.csv").is_file() and len((run / "metrics.csv").read_text().splitlines()) >= 2):
        assert time.monotonic() < deadline, "the job never finished an epoch"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=TERM", job], check=True)  # as Slurm does before a preemption
    waited = run_cli(*sweep, "--wait")
    assert waited.exit_code == 0, waited.output
    log = next(Path("slurm/sweeps").glob("*/slurm/*_log.out")).read_text()
    assert "stopped by SIGTERM at epoch" in log and f"requeueing job {job} (restart 1)" in log, log
    same_runs(mnist.run("local"), run)


def test_a_failing_job_is_reported_with_its_log_and_resubmitted(run_cli, mnist):
    sweep = ["sweep", "--lambda", "1e30", "--lr", "1e6", *mnist.args, *tiny(), *ONE_CPU]
    failed = run_cli(*sweep, "--wait")
    assert failed.exit_code == 1, failed.output
    assert "1 run did not finish" in failed.output and "(FAILED)" in failed.output
    assert "the loss became NaN or inf at epoch 1" in failed.output
    log = Path(failed.output.split("log: ")[1].split()[0].rstrip(";"))
    assert log.is_file() and "the loss became NaN or inf" in log.read_text()
    again = run_cli(*sweep)  # the same command submits the failed run again
    assert again.exit_code == 0, again.output
    assert "did not finish" in again.output and "submitting it again" in again.output
    subprocess.run(["scancel", submitted_job(again.output)], check=True)


def test_the_device_is_checked_where_the_job_runs_not_on_the_login_node(run_cli, mnist):
    """sweep --launcher slurm --device cuda was refused on a login node without a GPU: the job's node is
    the one that must have it. Here no node has one, so the job fails, saying so."""
    sweep = ["sweep", "--lambda", "0.01", "--device", "cuda", *mnist.args, *tiny(), *ONE_CPU]
    failed = run_cli(*sweep, "--wait")
    assert failed.exit_code == 1, failed.output
    assert "1 run did not finish" in failed.output and "this machine has no CUDA device" in failed.output
    auto = run_cli(*sweep, "--precision", "auto")
    assert auto.exit_code == 2 and "give --precision bf16 or fp32" in auto.output
