"""The run folder as pure functions: refusals, overwrite, resume reconciliation, relocation, the lock.
No training: RunFolder decides all of this before any data is loaded."""
import json
from pathlib import Path

import pytest

from centerloss_cli.dataset.fetch import DATASETS
from centerloss_cli.errors import CenterLossError
from centerloss_cli.rundir.files import CONFIG_JSON, FORMAT
from centerloss_cli.rundir.folder import RunFolder
from centerloss_cli.rundir.records import write_config
from centerloss_cli.settings.config import DEFAULTS

MNIST_FINGERPRINT = DATASETS["mnist"].fingerprint

RUN = DEFAULTS.run_dir

@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def saved_run(config=DEFAULTS) -> Path:
    """A run folder as a finished training leaves it, as far as opening it is concerned."""
    config.run_dir.mkdir(parents=True)
    write_config(config.run_dir, config,
                 {"format": FORMAT, "data_fingerprint": MNIST_FINGERPRINT, "torch_version": "x"})
    return config.run_dir


def test_an_occupied_folder_is_refused_without_resume_or_overwrite():
    saved_run()
    with pytest.raises(CenterLossError, match="already exists: add --resume to continue it or --overwrite"):
        RunFolder.open(DEFAULTS, MNIST_FINGERPRINT)
    with pytest.raises(CenterLossError, match="--resume and --overwrite contradict each other"):
        RunFolder.open(DEFAULTS, MNIST_FINGERPRINT, resume=True, overwrite=True)


def test_overwrite_deletes_only_when_the_folder_is_created():
    saved_run()
    (RUN / "features").mkdir()
    with RunFolder.open(DEFAULTS, MNIST_FINGERPRINT, overwrite=True) as folder:
        assert (RUN / CONFIG_JSON).exists()  # opening changed nothing: data may still fail to load
        folder.create({"torch_version": "y"})
        assert sorted(p.name for p in RUN.iterdir()) == [".centerloss", ".lock", "config.json", "features"]
        assert json.loads((RUN / CONFIG_JSON).read_text())["torch_version"] == "y"


def test_resume_with_other_settings_is_refused_naming_each_difference():
    saved_run(DEFAULTS.with_(name="r", epochs=1))
    given = DEFAULTS.with_(name="r", lr=0.1, batch_size=16, epochs=3)
    with pytest.raises(CenterLossError) as e:
        RunFolder.open(given, MNIST_FINGERPRINT, resume=True,
                       explicit=frozenset({"name", "lr", "batch_size", "epochs"}))
    assert "batch_size: saved 128, given 16" in str(e.value) and "lr: saved 0.01, given 0.1" in str(e.value)
    assert "epochs" not in str(e.value)  # epochs may change on resume
    with RunFolder.open(given, MNIST_FINGERPRINT, resume=True, explicit=frozenset({"name", "epochs"})) as folder:
        assert folder.config == DEFAULTS.with_(name="r", epochs=3)


def test_a_moved_run_folder_resumes_where_it_now_lives():
    saved_run(DEFAULTS.with_(output_dir="old"))
    Path("old").rename("new")
    moved = DEFAULTS.with_(output_dir="new/")
    with RunFolder.open(moved, MNIST_FINGERPRINT, resume=True, explicit=frozenset({"output_dir"})) as folder:
        assert folder.config.run_dir == Path("new/lambda0.01_alpha0.5_seed0") == folder.path


def test_one_folder_is_opened_by_one_run_at_a_time():
    saved_run()
    with RunFolder.open(DEFAULTS, MNIST_FINGERPRINT, resume=True):
        with pytest.raises(CenterLossError, match="already open in this process: two runs of this command map"):
            RunFolder.open(DEFAULTS, MNIST_FINGERPRINT, resume=True)
    with RunFolder.open(DEFAULTS, MNIST_FINGERPRINT, resume=True):  # released on close
        pass


def test_a_folder_the_tool_did_not_make_is_never_emptied():
    """--overwrite used to empty any folder: a user's files, or the tool's own sweeps/ folder."""
    thesis = Path("outputs/userstuff/thesis.tex")
    thesis.parent.mkdir(parents=True)
    thesis.write_text("x")
    with pytest.raises(CenterLossError, match=r"outputs/userstuff holds thesis.tex, but nothing that shows"):
        RunFolder.open(DEFAULTS.with_(name="userstuff"), MNIST_FINGERPRINT, overwrite=True)
    sweep_summary = Path("outputs/sweeps/lambda0-0.1_alpha0.5_seed0/summary.md")
    sweep_summary.parent.mkdir(parents=True)
    sweep_summary.write_text("| λ |")
    with pytest.raises(CenterLossError, match="outputs/sweeps holds lambda0-0.1_alpha0.5_seed0, but nothing"):
        RunFolder.open(DEFAULTS.with_(name="sweeps"), MNIST_FINGERPRINT, overwrite=True)
    assert thesis.read_text() == "x" and sweep_summary.read_text() == "| λ |"


def test_overwrite_deletes_only_what_the_tool_made():
    saved_run()
    (RUN / "checkpoint.pt").write_bytes(b"old")
    (RUN / "notes.txt").write_text("mine")
    with RunFolder.open(DEFAULTS, MNIST_FINGERPRINT, overwrite=True) as folder:
        folder.create({})
    assert not (RUN / "checkpoint.pt").exists() and (RUN / "notes.txt").read_text() == "mine"
