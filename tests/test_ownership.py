"""Nothing lost, round three: a folder is the tool's only when it can prove it (the mark it writes into a
folder it makes, or a checkpoint or config.json of its own in one made before the mark), whatever the names
of the files in it; a sweep folder is held by one sweep at a time."""
import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY, checkpoint, files_of, one_line

from centerloss_cli import run_sweep
from centerloss_cli.errors import CenterLossError


@pytest.mark.parametrize("planted", [
    {"config.json": '{"architectures": ["Bert"]}'},  # another program's folder
    {"checkpoint.pt": "my model", "notes.txt": "mine"},
    {"metrics.csv": "epoch,step\n1,1\n"},  # a user's file of a tool's name, alone
    {"plots/curves.png": "png"},
    {"features/epoch_001.npz": "npz"},
    # keys that many training scripts log: they used to pass for an older run of ours, and --overwrite replaced them
    {"config.json": '{"lambda": 0.01, "alpha": 0.5, "seed": 0, "torch_version": "2.1.0", "lr": 0.1}',
     "metrics.csv": "epoch,step,test_acc\n1,100,0.9\n"},
])
@pytest.mark.parametrize("how", ["--overwrite", "--resume"])
def test_a_folder_without_proof_is_never_written_whatever_its_files_are_named(run_cli, mnist, planted, how):
    folder = Path("outputs/theirs")
    for name, text in planted.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    before = files_of(folder)
    said = one_line(run_cli("train", *mnist.args, *TINY, "--name", "theirs", how))
    assert "but nothing that shows centerloss made it (no .centerloss)" in said
    assert files_of(folder) == before and not (folder / ".lock").exists()


def test_a_run_made_before_the_mark_resumes_and_is_marked(run_path, run_cli, mnist, trained):
    trained.copy()
    (run_path / ".centerloss").unlink()
    resumed = run_cli("train", *mnist.args, *TINY, "--epochs", "2", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert (run_path / ".centerloss").is_file() and checkpoint(run_path)["epoch"] == 2


def test_a_checkpoint_without_a_fingerprint_resumes_only_on_the_verified_dataset(run_path, run_cli, mnist, trained,
                                                                                  tmp_path):
    """A run of an earlier version (no config.json, no fingerprint) used to resume on other data (--no-verify)
    and record that data's fingerprint: a mixed run shown as clean."""
    trained.copy()
    ckpt = checkpoint(run_path)
    del ckpt["data_fingerprint"]
    torch.save(ckpt, run_path / "checkpoint.pt")
    (run_path / "config.json").unlink()
    other = tmp_path / "other"
    shutil.copytree(mnist.root, other)
    images = bytearray(gzip.decompress((other / "t10k-images-idx3-ubyte.gz").read_bytes()))
    images[-1] ^= 0xFF  # one pixel of the test set: other data
    (other / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bytes(images)))
    before = files_of(run_path)
    said = one_line(run_cli("train", "--data-dir", str(other), "--no-verify", *TINY, "--epochs", "2", "--name",
                           run_path.name, "--resume"))
    assert "records no data fingerprint (an earlier version made it)" in said
    assert files_of(run_path) == before


HOLD = """
import sys
from pathlib import Path
from centerloss_cli.rundir.lock import acquire
lock = acquire(Path(sys.argv[1]), "sweep folder")
print("held", flush=True)
sys.stdin.read()
"""


@pytest.mark.process  # starts a Python process of its own
def test_a_sweep_folder_is_held_by_one_sweep_and_never_one_of_a_users(mnist, runtime, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = mnist.config(tmp_path / "outputs", epochs=1)
    folder = tmp_path / "outputs" / "sweeps" / "mine"
    folder.mkdir(parents=True)
    (folder / "summary.md").write_text("my table")
    with pytest.raises(CenterLossError, match="holds summary.md, but nothing that shows centerloss made it"):
        run_sweep(base, [0.0], [0.5], name="mine", runtime=runtime, progress=False)
    assert [p.name for p in folder.iterdir()] == ["summary.md"]
    held = tmp_path / "outputs" / "sweeps" / "held"
    held.mkdir()
    # Another sweep of that name, running: a process that holds the folder's lock.
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(held)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(CenterLossError, match="sweep folder .*held is in use by another process"):
            run_sweep(base, [0.0], [0.5], name="held", runtime=runtime, progress=False)
    finally:
        holder.communicate(b"")
    assert [p.name for p in held.iterdir()] == [".lock"]


def test_a_second_training_in_another_thread_of_the_process_is_refused(mnist, tmp_path):
    """Two train() calls in two threads used to both finish, each with other weights than its run alone (the
    random generator is the process's), while recording seed 0."""
    import threading

    from centerloss_cli import train
    from centerloss_cli.engine.training import TRAINING_IN_THIS_PROCESS

    first = threading.Thread(target=train, args=(mnist.config(tmp_path / "a", epochs=1),), kwargs={"progress": False})
    first.start()
    while not TRAINING_IN_THIS_PROCESS.locked():
        assert first.is_alive(), "the first training ended before it trained"
    try:
        with pytest.raises(CenterLossError, match="another thread of this process is training"):
            train(mnist.config(tmp_path / "b", epochs=1), progress=False)
    finally:
        first.join()
    assert (mnist.run(tmp_path / "a", epochs=1) / "checkpoint.pt").is_file() and not (tmp_path / "b").exists()


def test_the_memory_check_heeds_the_process_limit():
    """Under `ulimit -v`, a batch beyond it used to end in an allocator traceback, its folder half made."""
    import resource

    from centerloss_cli.settings.config import resolve_config
    from centerloss_cli.settings.devices import address_space_left, check_fits

    mapped = int(Path("/proc/self/status").read_text().split("VmSize:")[1].split()[0]) * 1024
    previous = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (mapped + 2**30, previous[1]))  # 1 GiB more; nothing allocated below
    try:
        left = address_space_left()
        with pytest.raises(CenterLossError, match=r"may map only 1.0 GiB more \(its limit, ulimit -v\)"):
            check_fits(resolve_config(None, {"batch_size": 8000}), 60000, torch.device("cpu"))
    finally:
        resource.setrlimit(resource.RLIMIT_AS, previous)
    assert abs(left - 2**30) < 2**27 and address_space_left() is None


@pytest.mark.parametrize("kind", ["link", "folder"])
def test_a_run_whose_mark_is_not_a_file_is_proven_by_its_checkpoint_and_refused_in_one_true_line(
        run_path, run_cli, mnist, trained, kind):
    """It was refused with 'holds .centerloss ... (no .centerloss)': a line that contradicts itself."""
    trained.copy()
    (run_path / ".centerloss").unlink()
    if kind == "link":
        (run_path / ".centerloss").symlink_to("elsewhere")
    else:
        (run_path / ".centerloss").mkdir()
    before = files_of(run_path)
    said = one_line(run_cli("train", *mnist.args, *TINY, "--epochs", "2", "--resume"))
    assert said.endswith(f".centerloss is {'a symbolic link' if kind == 'link' else 'a folder'}, where the tool keeps "
                         "its own file; move it away, or choose another name"), said
    assert "no .centerloss" not in said and files_of(run_path) == before


def test_a_hard_link_snapshot_of_a_run_resumes_and_leaves_the_run_it_copied_alone(run_path, run_cli, mnist, trained):
    """`cp -al run backup` (as rsnapshot makes): resume and --overwrite were refused for the shared .lock, then for
    every file, though each is replaced by a rename."""
    trained.copy()
    subprocess.run(["cp", "-al", str(run_path), "outputs/backup"], check=True)
    original = files_of(run_path)
    resumed = run_cli("train", *mnist.args, *TINY, "--epochs", "2", "--name", "backup", "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert checkpoint(Path("outputs/backup"))["epoch"] == 2 and files_of(run_path) == original
    assert (run_path / ".lock").stat().st_nlink == 1 and Path("outputs/backup/.lock").stat().st_nlink == 1
    again = run_cli("train", *mnist.args, *TINY, "--name", "backup", "--overwrite")
    assert again.exit_code == 0, again.output
    assert checkpoint(Path("outputs/backup"))["epoch"] == 1 and files_of(run_path) == original


def dead_pid() -> int:
    """The pid of a process that has ended (reaped, so not reused at once)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


@pytest.mark.parametrize("committed", [False, True])
def test_a_killed_overwrite_is_undone_or_finished_by_the_next_call(run_path, run_cli, mnist, trained, committed):
    """A kill -9 inside --overwrite left the hidden trash folder (the old run) for good. Before every file was
    moved aside the overwrite had not happened: the files go back; after, it had: the trash goes."""
    trained.copy(1)
    before = files_of(run_path)
    trash = run_path / f".overwrite.centerloss-tmp-{dead_pid()}-0123456789ab"
    for name in ("checkpoint.pt", "features/epoch_001.npz"):  # moved aside, as --overwrite does, then killed
        (trash / name).parent.mkdir(parents=True, exist_ok=True)
        (run_path / name).rename(trash / name)
    if committed:
        (trash / ".committed").touch()
    result = run_cli("train", *mnist.args, *TINY, "--epochs", "2", "--resume")
    assert not trash.exists()
    if committed:  # the old checkpoint was deleted as asked, metrics.csv still records its epoch: refused
        assert result.exit_code != 0 and "its checkpoint.pt is missing" in result.output, result.output
    else:
        assert result.exit_code == 0, result.output
        assert checkpoint(run_path)["epoch"] == 2
        assert files_of(run_path)[run_path / "features/epoch_001.npz"] == before[run_path / "features/epoch_001.npz"]
