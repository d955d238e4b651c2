"""A run's identity: its settings and its data. A run made on other data or with other limits is never
taken for another; each refusal names the differences and the remedy that fits the command."""
import json
from pathlib import Path

import pytest
from conftest import TINY, synthetic_mnist, tiny

from centerloss_cli.dataset.fetch import DATASETS
from centerloss_cli.errors import CenterLossError
from centerloss_cli.rundir.files import CONFIG_JSON, read_metrics
from centerloss_cli.rundir.folder import RunFolder
from centerloss_cli.rundir.records import write_config
from centerloss_cli.settings.config import DEFAULTS
from centerloss_cli.settings.voice import Voice

MNIST_FINGERPRINT = DATASETS["mnist"].fingerprint


@pytest.fixture
def other_data(tmp_path) -> Path:
    """IDX files of other content (another synthetic draw): a stand-in for Fashion-MNIST given with --no-verify."""
    return synthetic_mnist(tmp_path / "other", seed=1)


def test_a_sweep_on_other_data_never_reuses_the_runs_of_this_data(run_cli, mnist, other_data):
    sweep = ["sweep", "--lambda", "0,0.1", *TINY]
    assert run_cli(*sweep, *mnist.args).exit_code == 0
    before = {p: p.read_bytes() for p in Path("outputs").glob("*/checkpoint.pt")}
    other = run_cli(*sweep, "--data-dir", other_data, "--no-verify")
    assert other.exit_code == 0, other.output
    assert "2 runs (2 trained now)" in other.output  # it used to report the first data's runs as its own
    after = list(Path("outputs").glob("*/checkpoint.pt"))
    assert len(after) == 4 and {p: p.read_bytes() for p in before} == before
    fingerprint = lambda p: json.loads((p.parent / CONFIG_JSON).read_text())["data_fingerprint"]  # noqa: E731
    assert {fingerprint(p) for p in before}.isdisjoint(fingerprint(p) for p in after if p not in before)
    assert all("_data" in p.parent.name for p in after if p not in before)


def test_resume_with_other_limits_is_another_run(run_cli, mnist):
    """`train --resume` meant for the full run used to return a smaller run as 'already complete'."""
    small = run_cli("train", *mnist.args, *tiny(train_limit=16))
    assert small.exit_code == 0, small.output
    resumed = run_cli("train", *mnist.args, *TINY, "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "already complete" not in resumed.output and "yet: it starts now" in resumed.output
    assert mnist.run(train_limit=16) != mnist.run() and (mnist.run() / "checkpoint.pt").is_file()
    assert "_n16_" in mnist.run(train_limit=16).name and "_n32_" in mnist.run().name


def test_a_sweep_with_other_limits_trains_runs_of_its_own(run_cli, mnist):
    """It used to stop with a hint to use --overwrite, which sweep does not accept."""
    assert run_cli("sweep", "--lambda", "0", *mnist.args, *TINY).exit_code == 0
    other = run_cli("sweep", "--lambda", "0", *mnist.args, *tiny(train_limit=16))
    assert other.exit_code == 0, other.output
    assert "1 run (1 trained now)" in other.output
    assert len(read_metrics(mnist.run(train_limit=16, lam=0))) == 1


def test_a_named_run_refuses_other_data_or_limits_naming_each(run_cli, mnist, other_data, trained):
    trained.copy(dest=Path("outputs/mine"))
    data = run_cli("train", "--data-dir", other_data, "--no-verify", *TINY, "--name", "mine", "--resume")
    assert data.exit_code != 0
    assert "it was trained on other data (data fingerprint: saved" in data.output
    assert "give --name to train a new run beside it, or --overwrite to replace it" in data.output
    limits = run_cli("train", *mnist.args, *tiny(train_limit=16), "--name", "mine", "--resume")
    assert limits.exit_code != 0 and "train_limit: saved 32, given 16" in limits.output, limits.output
    assert len(read_metrics("outputs/mine")) == 1  # nothing touched


def test_a_sweep_refusal_gives_a_sweeps_remedy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = DEFAULTS.with_(name="r", lr=0.1)
    saved.run_dir.mkdir(parents=True)
    write_config(saved.run_dir, saved, {"format": 2, "data_fingerprint": MNIST_FINGERPRINT, "torch_version": "x"})
    refusal = "its settings differ .lr: saved 0.1, given 0.01.; give the sweep another --output-dir"
    with pytest.raises(CenterLossError, match=refusal):
        RunFolder.open(DEFAULTS.with_(name="r"), MNIST_FINGERPRINT, resume=True, voice=Voice(sweep=True))
    with pytest.raises(CenterLossError, match="drop those flags to continue it as saved, give --name"):
        RunFolder.open(DEFAULTS.with_(name="r"), MNIST_FINGERPRINT, resume=True)


def test_a_folder_of_an_older_version_is_not_resumed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    old = DEFAULTS.with_(name="old")
    old.run_dir.mkdir(parents=True)
    write_config(old.run_dir, old, {"torch_version": "x"})  # no format: written before the official net
    with pytest.raises(CenterLossError, match="made by an older centerloss .folder format 1, this one writes 2"):
        RunFolder.open(old, MNIST_FINGERPRINT, resume=True)


def test_default_names_gain_a_suffix_per_setting_that_differs_from_the_paper():
    assert DEFAULTS.run_name == "lambda0.01_alpha0.5_seed0"
    c = DEFAULTS.with_(train_limit=2000, batch_size=64, net="table1", lr_milestones=(100, 200))
    assert c.run_name == "lambda0.01_alpha0.5_seed0_table1_b64_steps100-200_n2000"
    assert DEFAULTS.with_(center_update="caffe", alpha=0.1).run_name == "lambda0.01_seed0_caffe"  # caffe ignores α
    # How long or where it trains is not part of its identity: --epochs and --iterations may grow on resume.
    assert DEFAULTS.with_(epochs=3, iterations=5, device="cpu", output_dir="x").run_name == DEFAULTS.run_name
