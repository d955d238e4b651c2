"""Nothing lost, round two: what a user or an administrator might do to a run folder, its files, its
settings and its processes. Each case ends with nothing lost and one line: what was wrong, what is
accepted, what was kept."""
import errno
import json
import os
import pickle
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, checkpoint, files_of, in_background, one_line, run_process, tiny

from centerloss_cli import __version__
from centerloss_cli.core.center_loss import CenterLoss
from centerloss_cli.engine import training
from centerloss_cli.errors import CenterLossError
from centerloss_cli.rundir.files import read_metrics
from centerloss_cli.rundir.records import cpu_model
from centerloss_cli.rundir.storage import TEMP_MARK
from centerloss_cli.settings import devices
from centerloss_cli.settings.config import TrainConfig
from centerloss_cli.settings.devices import resolve_precision

SCRIPTS = Path(__file__).parent.parent / "scripts"

# --- the five data-loss paths --------------------------------------------------------------------------

def test_a_resume_without_config_json_trains_with_the_checkpoints_settings(run_path, run_cli, mnist, trained):
    """A resume without config.json used to train on with whatever settings were given, and recorded the
    mix (one epoch of lambda 0.01, one of 0.5) as one clean run of lambda 0.5."""
    trained.copy()
    (run_path / "config.json").unlink()
    before = files_of(run_path)
    other = run_cli("train", *mnist.args, *tiny(epochs=2), "--lambda", "0.5", "--name", run_path.name, "--resume")
    assert "its settings differ (lambda: saved 0.01, given 0.5)" in one_line(other)
    assert files_of(run_path) == before
    same = run_cli("train", *mnist.args, *tiny(epochs=2), "--name", run_path.name, "--resume")
    assert same.exit_code == 0, same.output
    assert json.loads((run_path / "config.json").read_text())["lambda"] == 0.01  # written again, from the checkpoint
    assert checkpoint(run_path)["config"]["lambda"] == 0.01 and len(read_metrics(run_path)) == 2


def test_overwrite_deletes_the_tools_files_only_file_by_file(run_path, run_cli, mnist, trained):
    """--overwrite used to delete a user's files inside the run folder's plots/, features/ and tensorboard/."""
    trained.copy()
    mine = {run_path / "plots" / "figure_for_paper.png": b"mine", run_path / "features" / "NOTES.md": b"notes",
            run_path / "tensorboard" / "my_events.txt": b"events", run_path / "thesis.tex": b"tex"}
    for path, data in mine.items():
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
    result = run_cli("train", *mnist.args, *TINY, "--overwrite")
    assert result.exit_code == 0, result.output
    assert all(path.read_bytes() == data for path, data in mine.items())
    assert len(read_metrics(run_path)) == 1 and (run_path / "features" / "epoch_001.npz").is_file()
    assert not (run_path / "plots" / "test_epoch_001.png").exists()  # the old run's plot went (this one has none)


def test_a_resume_deletes_no_file_of_the_users_that_looks_like_a_temp_file(run_path, run_cli, mnist, trained):
    """Every .*.tmp-* used to be taken for a killed writer's temp file; only the tool's own names, of a
    dead writer, are."""
    trained.copy()
    mine = [run_path / ".draft.tmp-2024", run_path / ".notes.tmp-1", run_path / "features" / ".x.tmp-99999999",
            # names like the tool's, but without its random token: a user's (round three, item 4)
            run_path / f".thesis{TEMP_MARK}999999", run_path / "features" / f".x{TEMP_MARK}1",
            run_path / "plots" / f".live{TEMP_MARK}{os.getpid()}-0123456789ab"]  # a live process's, this one
    for path in mine:
        path.write_text("mine")
    dead = run_path / "features" / f".epoch_002.npz{TEMP_MARK}99999999-0123456789ab"
    dead.write_text("half")
    result = run_cli("train", *mnist.args, *tiny(epochs=2), "--resume")
    assert result.exit_code == 0, result.output
    assert all(path.read_text() == "mine" for path in mine) and not dead.exists()


def test_overwrite_is_all_or_nothing(run_path, run_cli, mnist, trained, monkeypatch):
    """With one file it could not delete, --overwrite used to stop after deleting others."""
    trained.copy()
    before = files_of(run_path)
    real_rename = Path.rename

    def stuck(self, target):
        if self.name == "test_epoch_001.png":
            raise OSError(errno.EPERM, "Operation not permitted")
        return real_rename(self, target)

    monkeypatch.setattr(Path, "rename", stuck)
    result = run_cli("train", *mnist.args, *TINY, "--overwrite")
    assert "test_epoch_001.png cannot be deleted (Operation not permitted); nothing was deleted" in one_line(result)
    assert files_of(run_path) == before and not list(run_path.glob(f".overwrite{TEMP_MARK}*"))


def test_a_sweep_of_other_runs_never_writes_over_another_sweeps_outputs(run_cli, mnist):
    """The sweep folder was named from lambda, alpha and seed only: a sweep with other limits replaced
    another's summary and grids."""
    assert run_cli("sweep", "--lambda", "0.1", *mnist.args, *TINY).exit_code == 0
    (first,) = Path("outputs/sweeps").iterdir()
    summary = (first / "summary.md").read_text()
    other = run_cli("sweep", "--lambda", "0.1", *mnist.args, *tiny(train_limit=16))
    assert other.exit_code == 0, other.output
    assert len(list(Path("outputs/sweeps").iterdir())) == 2 and (first / "summary.md").read_text() == summary
    named = [run_cli("sweep", "--lambda", "0.1", *mnist.args, *settings, "--sweep-name", "fig3")
             for settings in (TINY, tiny(train_limit=16))]
    assert named[0].exit_code == 0, named[0].output
    assert "sweep folder outputs/sweeps/fig3 holds the outputs of a sweep of other runs" in one_line(named[1])


@in_background("reproduce figure 2")
def reproduce_figure2(cwd: Path, mnist):
    script = SCRIPTS / "reproduce_figure2.sh"
    return run_process(["bash", str(script)], cwd, {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", "OUTPUT_DIR": "out",
        "EXTRA_ARGS": " ".join([*mnist.args, *TINY]), "DEVICE": "cpu"})


def test_reproduce_figure2_names_its_run_from_its_settings(background):
    """The script always used the run name figure2_softmax: a quick look then blocked the full run."""
    cwd, done = background["reproduce figure 2"]
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = [p for p in (cwd / "out").iterdir() if p.name != "figures"]
    assert run.name.startswith("lambda0_alpha0.5_seed0_b8_n32_test16_plot16")
    assert (cwd / "out" / "figures" / f"figure2_{run.name}.png").is_file()
    assert (run / "plots" / "test.gif").is_file()


# --- runaway sizes ----------------------------------------------------------------------------------------

SIZES = {  # settings (by key; None drops one) -> what the refusal says
    "a batch size no machine holds": ({"batch_size": "99999999999999999999999"},
                                      "batch_size = 99999999999999999999999: expected an integer in [1, 1,000,000]"),
    "a batch larger than the data": ({"batch_size": 100000}, "batch_size = 100000: larger than the 32 training images"),
    "iterations that cannot finish": ({"epochs": None, "iterations": 10**20},
                                      "iterations = 100000000000000000000: expected an integer in [1, 100,000,000]"),
    "epochs that cannot finish": ({"epochs": 10**20}, "epochs = 100000000000000000000: expected an integer in "
                                                      "[1, 1,000,000]"),
    "steps that cannot finish": ({"epochs": 10**6, "batch_size": 1, "train_limit": 600},
                                 "epochs = 1000000: 600,000,000 steps of 1 images, more than the 100,000,000"),
}


@pytest.mark.parametrize("case", list(SIZES))
def test_sizes_that_cannot_run_are_refused_before_anything_is_allocated(run_cli, mnist, case):
    """They used to allocate 10 to 20 GB, or hang for good, ignoring SIGTERM."""
    changes, message = SIZES[case]
    assert message in one_line(run_cli("train", *mnist.args, *tiny(**changes)))
    assert not Path("outputs").exists()


def test_a_batch_the_memory_cannot_hold_is_refused(run_cli, mnist, monkeypatch):
    monkeypatch.setattr(devices, "free_memory", lambda device: 2**29)  # a machine with 0.5 GiB free
    result = run_cli("train", *mnist.args, *tiny(batch_size=600, train_limit=None), "--name", "big")
    assert "batch_size = 600: a step needs about 0.9 GiB, and cpu has 0.5 GiB free; give a smaller batch size" \
        in one_line(result)
    assert not Path("outputs/big").exists()


# --- files that are not what they should be: one line each, nothing changed ----------------------------------

def damage(run: Path, how: str) -> str:
    """Damage the run folder `how`; returns what the refusal must say."""
    if how == "checkpoint holds an integer":
        torch.save(7, run / "checkpoint.pt")
        return "checkpoint.pt is not a checkpoint (it holds a int)"
    if how == "checkpoint's step is text":
        ckpt = checkpoint(run)
        ckpt["step"] = "4"
        torch.save(ckpt, run / "checkpoint.pt")
        return "checkpoint.pt is not a checkpoint of this version (step of the wrong kind)"
    if how == ".lock is a folder":
        (run / ".lock").unlink()
        (run / ".lock").mkdir()
        return ".lock is a folder, where the tool keeps its own file"
    if how == ".lock is a symlink":
        (run / ".lock").unlink()
        (run / ".lock").symlink_to("/etc/passwd")
        return ".lock is a symbolic link, where the tool keeps its own file"
    if how == "plots is a file":
        shutil.rmtree(run / "plots")
        (run / "plots").write_text("x")
        return "plots is a file, where the tool keeps its own folder"
    if how == "config.json is not JSON":
        (run / "config.json").write_text("{lambda: 0.5")
        return "config.json: cannot read the run's settings"
    if how == "config.json's lambda is text":
        record = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps({**record, "lambda": "big"}))
        return "config.json: expected a number"
    raise ValueError(how)


@pytest.mark.parametrize("how", ["checkpoint holds an integer", "checkpoint's step is text", ".lock is a folder",
                                 ".lock is a symlink", "plots is a file", "config.json is not JSON",
                                 "config.json's lambda is text"])
def test_a_damaged_run_folder_is_one_line_and_changes_nothing(run_path, run_cli, mnist, trained, how):
    trained.copy()
    message = damage(run_path, how)
    before = files_of(run_path)
    result = run_cli("train", *mnist.args, *tiny(epochs=2), "--resume")
    assert message in one_line(result)
    assert files_of(run_path) == before


@pytest.mark.parametrize("damage_,message", [
    ("a missing column", "metrics.csv: cannot be read (no column test_acc, test_ratio)"),
    ("bytes that are not UTF-8", "metrics.csv: cannot be read (not UTF-8 text)"),
])
def test_a_damaged_metrics_csv_is_one_line_for_plot_and_repaired_by_a_resume(run_path, run_cli, mnist, trained,
                                                                              damage_, message):
    trained.copy()
    good = (run_path / "metrics.csv").read_text()
    if damage_ == "a missing column":
        (run_path / "metrics.csv").write_text("epoch,step\n1,4\n")
    else:
        (run_path / "metrics.csv").write_bytes(b"epoch,\xff\xfe\n")
    assert message in one_line(run_cli("plot", run_path, "--curves"))
    assert run_cli("train", *mnist.args, *TINY, "--resume").exit_code == 0
    assert (run_path / "metrics.csv").read_text() == good  # derived from the checkpoint again


def test_images_of_no_pixels_are_one_line(run_cli, tmp_path):
    from conftest import synthetic_mnist

    root = synthetic_mnist(tmp_path / "d", gz=False)
    (root / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + (300).to_bytes(4, "big") + bytes(8))
    result = run_cli("train", "--data-dir", root, "--no-verify", *TINY)
    assert "t10k-images-idx3-ubyte: images of 0x0 pixels; LeNet++ takes 28x28" in one_line(result)


def test_a_read_only_folder_is_one_line_for_plot(run_path, run_cli, mnist, trained, monkeypatch):
    trained.copy()
    import centerloss_cli.rundir.storage as storage

    def read_only(path, mode):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(storage, "open_temp", read_only)
    assert "could not write" in one_line(run_cli("plot", run_path, "--epoch", "1"))
    assert "Read-only file system; the previous version is intact" in run_cli("plot", run_path).output


def test_a_full_disk_inside_a_checkpoint_write_is_one_line(run_path, run_cli, mnist, trained, monkeypatch):
    """A full disk during torch.save came out as `RuntimeError ... unexpected pos`."""
    trained.copy()
    good = (run_path / "checkpoint.pt").read_bytes()
    from fault_driver import HalfWritten

    import centerloss_cli.rundir.storage as storage

    real_open = storage.open_temp

    def disk_full():
        raise OSError(errno.ENOSPC, "No space left on device")

    def half_written_checkpoint(path, mode):
        tmp, f = real_open(path, mode)
        return (tmp, HalfWritten(f, disk_full)) if "checkpoint.pt" in str(path) else (tmp, f)

    monkeypatch.setattr(storage, "open_temp", half_written_checkpoint)
    result = run_cli("train", *mnist.args, *tiny(epochs=2), "--resume")
    assert "checkpoint.pt: the disk is full; the previous version is intact" in one_line(result)
    assert (run_path / "checkpoint.pt").read_bytes() == good


def test_fps_out_of_range_is_one_line(run_path, run_cli, trained):
    trained.copy()
    assert "--fps 0.001: expected a number of frames per second in [0.1, 50]" in \
        one_line(run_cli("plot", run_path, "--gif", "--fps", "0.001"))


def test_a_python_caller_gets_one_line_naming_its_arguments(tmp_path, mnist, runtime):
    """TrainConfig(epochs=1.5) used to train an epoch, then crash, leaving a half run folder."""
    with pytest.raises(CenterLossError, match="^epochs = 1.5: expected an integer$"):
        TrainConfig(epochs=1.5)
    config = mnist.config(tmp_path)
    training.train(config, runtime=runtime, progress=False)
    with pytest.raises(CenterLossError, match=r"already exists: add resume=True to continue it or overwrite=True"):
        training.train(config, progress=False)  # no runtime: the Python caller's own, which speaks Python


# --- wrong but quiet ------------------------------------------------------------------------------------------

def test_a_copied_run_folder_resumes(run_path, run_cli, mnist, trained):
    """A copy could never be resumed: the refusal named the original and a remedy that could not work."""
    trained.copy()
    shutil.copytree(run_path, Path("outputs/copy"))
    result = run_cli("train", *mnist.args, *tiny(epochs=2), "--name", "copy", "--resume")
    assert result.exit_code == 0, result.output
    assert len(read_metrics("outputs/copy")) == 2 and len(read_metrics(run_path)) == 1


def test_a_refused_folder_gets_no_lock_file(run_cli, mnist, tmp_path):
    """A refused folder (a user's, the output dir `/`) used to get a .lock written into it."""
    mine = Path("outputs/mine")
    mine.mkdir(parents=True)
    (mine / "thesis.tex").write_text("x")
    said = one_line(run_cli("train", *mnist.args, *TINY, "--name", "mine", "--overwrite"))
    assert "nothing that shows centerloss made it" in said
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"]
    target = tmp_path / "target"
    target.mkdir()
    (target / "data.bin").write_text("x")
    Path("outputs/link").symlink_to(target)
    said = one_line(run_cli("train", *mnist.args, *TINY, "--name", "link", "--resume"))
    assert "nothing that shows centerloss made it" in said
    assert [p.name for p in target.iterdir()] == ["data.bin"]


def test_an_epoch_lost_between_checkpoint_and_tensorboard_is_logged_on_resume(run_path, run_cli, mnist, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from centerloss_cli.plots import tensorboard

    def crash(*args):
        raise RuntimeError("killed between the checkpoint and the TensorBoard log")

    with monkeypatch.context() as patch:  # undoes only this patch: monkeypatch.undo() also undid run_cli's chdir
        patch.setattr(tensorboard.Logger, "log_epoch", crash)
        assert run_cli("train", *mnist.args, *TINY, "--tensorboard").exit_code != 0
    assert checkpoint(run_path)["epoch"] == 1  # the epoch was committed, its log was not
    assert run_cli("train", *mnist.args, *tiny(epochs=2), "--tensorboard", "--resume").exit_code == 0
    events = EventAccumulator(str(run_path / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("accuracy/test_acc")] == [1, 2]


def test_center_loss_refuses_labels_out_of_range():
    """Label -1 used to be taken as class 9."""
    cl = CenterLoss(num_classes=10, feat_dim=2)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\): got -1"):
        cl(torch.zeros(2, 2), torch.tensor([0, -1]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 10\): got 10"):
        cl.update(torch.zeros(2, 2), torch.tensor([10, 1]), alpha=0.5)


def test_the_errors_cross_a_pipe_whole():
    """A sweep worker's Interrupted reaches its sweep with its signal, so the exit code is the signal's."""
    from centerloss_cli.errors import Interrupted

    e = pickle.loads(pickle.dumps(Interrupted("stopped", signal.SIGTERM, resume="the same sweep command again")))
    assert (e.message, e.signum, e.exit_code) == ("stopped", signal.SIGTERM, 143)
    assert str(e) == "stopped. Resume with: the same sweep command again"


ENTRY_POINT_SETTINGS = {"LAMBDAS": "0,0.01", "ALPHAS": "0.1,0.5", "SEEDS": "0,1", "DEVICE": "cpu",
                        "OUTPUT_DIR": "out", "DOCS_DIR": "docs"}


@in_background("reproduce all")
def reproduce_all(cwd: Path, mnist):
    """The docs' one command, tiny. (That a second call trains nothing is the sweeps' and train --resume's
    own promise, tested in test_plot_sweep and test_cli: a second call here would cost 20 s of processes.)"""
    script = SCRIPTS / "reproduce_all.sh"
    env = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **ENTRY_POINT_SETTINGS,
           "EXTRA_ARGS": " ".join([*mnist.args, *TINY])}
    return run_process(["bash", str(script)], cwd, env)


def test_the_one_command_writes_every_figure_and_table_of_the_results_page(background):
    cwd, first = background["reproduce all"]
    assert first.returncode == 0, first.stderr[-3000:]
    assert "4 runs (2 trained now)" in first.stdout + first.stderr  # the alpha sweep reuses two of Figure 3's
    docs = cwd / "docs"
    promised = ["figure2.png", *(f"{sweep}_{figure}.png" for sweep in ("figure3", "alpha")
                                 for figure in ("grid", "compactness", "curves"))]
    assert sorted(p.name for p in docs.iterdir()) == sorted([".centerloss-page", "README.md", *promised])
    page = (docs / "README.md").read_text()
    for name in promised:
        assert f"]({name})" in page and (docs / name).stat().st_size > 10_000, name
    # the command that made it, with the switches that capped torch's kernels (CI's first pass plays AVX2)
    caps = "".join(f"{cap}={os.environ[cap]} " for cap in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
                   if os.environ.get(cap))
    assert f"    {caps}CONFIG=fast SEEDS=0,1 DEVICE=cpu EXTRA_ARGS=" in page, page[:600]
    # as recorded: what --precision auto took on this CPU (bf16 where it is native; fp32 on AVX2, as in CI)
    picked = resolve_precision("auto", torch.device("cpu"))
    assert f"Trained on cpu ({cpu_model()}), " in page and f" a run, precision {picked}, " in page
    assert f", centerloss {__version__} at " in page  # the tool's version and commit, as each run recorded them
    # a table row per value, with mean ± std over the 2 seeds, and a verdict per step between values
    for row in ("| 0 | 2 | ", "| 0.01 | 2 | ", "| 0.1 | 2 | ", "| 0.5 | 2 | "):
        assert row in page and " ± " in page.split(row)[1].split("\n")[0], row
    assert "- λ 0 → 0.01: the test ratio " in page and "- α 0.1 → 0.5: the test ratio " in page
    runs = [line for line in page.splitlines() if line.startswith("| `lambda")]
    assert len(runs) == 6 and all("_lr0.1_" in r for r in runs)  # the fast recipe's settings, every run


def test_the_results_page_claims_no_spread_where_a_value_has_one_seed():
    """The paper's page, one seed a value, said "falls, beyond the spread of the seeds (0.169 ± 0.000 → ...)":
    a spread of one seed is none."""
    from centerloss_cli.plots.page_sections import Sweep, beyond_spread

    row = lambda lam, seed, ratio: {"lam": lam, "seed": seed, "test_ratio": ratio}  # noqa: E731
    one = Sweep(Path("."), [row(0, 0, 0.169), row(0.1, 0, 0.034)], "lam")
    assert beyond_spread(one) == ["- λ 0 → 0.1: the test ratio falls (0.169 → 0.034; one seed, so no "
                                  "spread to compare)."]
    two = Sweep(Path("."), [*one.rows, row(0, 1, 0.171), row(0.1, 1, 0.036)], "lam")
    assert "falls, beyond the spread of the seeds (0.170 ± 0.001 → 0.035 ± 0.001)" in beyond_spread(two)[0]


def test_a_sweep_of_no_values_is_one_line_and_writes_nothing(tmp_path, mnist):
    """run_sweep(cfg, [], [0.5]) gave an IndexError, after writing an empty sweep folder."""
    from centerloss_cli.errors import ConfigError
    from centerloss_cli.launch.sweep import run_sweep

    config = mnist.config(tmp_path / "out")
    for lams, alphas, seeds in (([], [0.5], None), ([0.1], [], None), ([0.1], [0.5], [])):
        with pytest.raises(ConfigError, match=r"= \[\]: a sweep needs at least one value"):
            run_sweep(config, lams, alphas, seeds)
    assert not (tmp_path / "out").exists()


def test_train_ignores_a_config_files_slurm_table(run_cli, mnist, run_path):
    """The docs say train ignores [slurm]; a bad table there used to refuse the run."""
    Path("c.toml").write_text("lambda = 0.01\n[slurm]\ncpus = -3\n")
    result = run_cli("train", "--config", "c.toml", *mnist.args, *TINY)
    assert result.exit_code == 0, result.output
    assert (run_path / "checkpoint.pt").is_file()
    refused = run_cli("sweep", "--config", "c.toml", *mnist.args, *TINY)
    assert refused.exit_code == 2 and "cpus" in refused.output  # a sweep, which would use it, still checks it


def test_a_write_never_follows_a_link_planted_at_its_temp_name(tmp_path, monkeypatch):
    """The temp name was predictable (.NAME.centerloss-tmp-PID) and opened with open(..., 'wb'): a link
    planted there sent the write to a file outside the run, and left the target a link to it."""
    from centerloss_cli.rundir import storage

    outside, target = tmp_path / "outside.txt", tmp_path / "run" / "metrics.csv"
    target.parent.mkdir()
    outside.write_text("a user's file")
    tokens = iter(["aaaaaaaaaaaa", "bbbbbbbbbbbb"])
    monkeypatch.setattr(storage.secrets, "token_hex", lambda n: next(tokens))
    planted = target.parent / f".metrics.csv{TEMP_MARK}{os.getpid()}-aaaaaaaaaaaa"
    planted.symlink_to(outside)
    storage.atomic_write_text(target, "epoch\n")
    assert outside.read_text() == "a user's file" and planted.is_symlink()
    assert target.read_text() == "epoch\n" and not target.is_symlink()


def test_damaged_and_oversized_gzip_files_are_one_line(tmp_path, monkeypatch):
    """A .gz of 30 zeroed bytes gave a zlib.error, a gzip bomb a MemoryError."""
    import gzip

    from centerloss_cli.dataset import fetch
    from centerloss_cli.errors import DataError

    zeroed = tmp_path / "zeroed.gz"
    zeroed.write_bytes(b"\x1f\x8b\x08\x00" + bytes(26))
    with pytest.raises(DataError, match="corrupt or truncated gzip data"):
        fetch.read_bytes(zeroed)
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(bytes(4096)))
    monkeypatch.setattr(fetch, "MAX_IDX_BYTES", 1024)  # the real limit is 256 MiB: a real bomb costs seconds
    with pytest.raises(DataError, match="unpacks to more than"):
        fetch.read_bytes(bomb)


def test_a_hard_linked_lock_is_never_written_through_and_a_sweeps_file_is_refused_first(run_path, run_cli, mnist,
                                                                                       trained):
    """A .lock hard-linked to a user's file got the pid written into it: the run now gets a lock file of its own
    (replaced by a rename) and the user's file stays as it was. `sweeps` being a file let every run train first,
    then gave a traceback."""
    trained.copy()
    users = Path("thesis.txt")
    users.write_text("chapter 1")
    (run_path / ".lock").unlink(missing_ok=True)
    os.link(users, run_path / ".lock")
    resumed = run_cli("train", *mnist.args, *tiny(epochs=2), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert users.read_text() == "chapter 1" and users.stat().st_nlink == 1
    Path("elsewhere").mkdir()
    Path("elsewhere/sweeps").write_text("a user's file")
    refused = run_cli("sweep", "--lambda", "0.1", *mnist.args, *TINY, "--output-dir", "elsewhere")
    assert "elsewhere/sweeps is not a folder, where the sweep's outputs go" in one_line(refused)
    assert sorted(p.name for p in Path("elsewhere").iterdir()) == ["sweeps"]  # no run trained


@pytest.mark.parametrize("change, said", [
    ({"threads": 100000}, "threads = 100000"), ({"threads": 0}, "threads = 0"), ({"threads": -1}, "threads = -1"),
    ({"step": -5}, "step = -5"), ({"loss_sums": torch.zeros(3)}, "loss_sums of shape (3,), not (2,)"),
    ({"history": [{"epoch": 1}]}, "a history row without its columns"),
])
def test_a_tampered_checkpoint_is_one_line_and_changes_nothing(run_path, run_cli, mnist, trained, change, said):
    """threads 100000 crashed torch (a segmentation fault); 0, -1, a negative step, loss sums of another
    shape and a history row without its columns gave tracebacks or a stuck run."""
    trained.copy()
    torch.save({**checkpoint(run_path), **change}, run_path / "checkpoint.pt")
    before = files_of(run_path)
    line = one_line(run_cli("train", *mnist.args, *tiny(epochs=2), "--resume"))
    assert f"checkpoint.pt is damaged ({said}); use --overwrite to start again" in line
    assert files_of(run_path) == before


@pytest.mark.parametrize("record", ['{"runs": [1, 2]}', '{"runs": [null]}', '{"runs": [[1]]}',
                                    '{"runs": ' + "[" * 5000 + "]" * 5000 + "}"])
def test_a_damaged_sweep_record_is_one_line(run_cli, mnist, record):
    folder = Path("outputs/sweeps/mine")
    folder.mkdir(parents=True)
    (folder / "sweep.json").write_text(record)
    line = one_line(run_cli("sweep", "--lambda", "0.1", *mnist.args, *TINY, "--sweep-name", "mine"))
    assert "sweep.json: damaged; move the sweep folder" in line
    assert sorted(p.name for p in Path("outputs").iterdir()) == ["sweeps"]


def test_deeply_nested_config_files_and_a_fifo_for_a_file_are_one_line(run_path, run_cli, mnist, trained):
    """config.json or a TOML nested thousands deep gave a RecursionError; a FIFO named metrics.csv made a
    resume of a finished run hang, deaf to SIGTERM."""
    Path("deep.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested too deep" in one_line(run_cli("train", "--config", "deep.toml", *mnist.args, *TINY))
    trained.copy()
    record = (run_path / "config.json").read_text()
    (run_path / "config.json").write_text('{"a": ' + "[" * 5000 + "]" * 5000 + "}")
    assert "nested too deep" in one_line(run_cli("train", *mnist.args, *TINY, "--resume"))
    (run_path / "config.json").write_text(record)
    (run_path / "metrics.csv").unlink()
    os.mkfifo(run_path / "metrics.csv")
    assert "metrics.csv is not a regular file" in one_line(run_cli("train", *mnist.args, *TINY, "--resume"))


def test_an_output_folder_too_long_for_the_file_system_is_one_line(run_cli, mnist):
    """A 4 KB --output-dir gave OSError 36 (file name too long)."""
    for path in ("a" * 4000, "b" * 300, "x/" + "c" * 256):
        line = one_line(run_cli("train", *mnist.args, *TINY, "--output-dir", path))
        assert "expected a non-empty path of printable UTF-8 characters, of at most 3,000 bytes, each part at most " \
               "255" in line
    assert not list(Path(".").iterdir())
