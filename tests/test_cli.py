import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DOCS, README, ROOT, TINY, cpu_bf16, in_background, python_blocks, run_process, tiny

from centerloss_cli import __version__
from centerloss_cli.rundir.files import read_metrics
from centerloss_cli.settings.config import resolve_config


def test_one_epoch_run_writes_every_file(run_path, run_cli, mnist):
    """--no-plots (the tests' default) saves everything but the plots; --plots on the finished run draws them."""
    result = run_cli("train", *mnist.args, *TINY)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.output and str(run_path) in result.output
    assert f"--no-plots: centerloss plot {run_path} [--curves] draws them" in result.output
    assert not (run_path / "plots").exists()
    again = run_cli("train", *mnist.args, *tiny(plots=True), "--resume")  # trains nothing: draws what is missing
    assert again.exit_code == 0 and "plots/)" in again.output, again.output
    for f in ["config.json", "metrics.csv", "checkpoint.pt", "features/epoch_001.npz",
              "plots/train_epoch_001.png", "plots/test_epoch_001.png", "plots/curves.png"]:
        assert (run_path / f).is_file() and (run_path / f).stat().st_size > 0, f
    assert not [p for p in run_path.rglob("*") if ".tmp" in p.name]
    config = json.loads((run_path / "config.json").read_text())
    assert config["lambda"] == 0.01 and config["alpha"] == 0.5 and config["train_limit"] == 32
    assert {"torch_version", "torchvision_version", "python_version", "resolved_device"} <= set(config)
    # what made it: this tool's version, and the commit of this checkout ("+changes" where it had uncommitted ones)
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert config["centerloss_version"] == __version__
    assert config["centerloss_commit"] in (head, head + "+changes"), config["centerloss_commit"]
    rows = read_metrics(run_path)
    assert [r["epoch"] for r in rows] == [1.0] and rows[0]["step"] == 4 and rows[0]["lr"] == 0.01
    assert 0 <= rows[0]["test_acc"] <= 1 and rows[0]["test_ratio"] > 0
    saved = np.load(run_path / "features/epoch_001.npz")
    assert saved["test_features"].shape == (16, 2) and saved["train_features"].shape == (16, 2)
    assert saved["centers"].shape == (10, 2) and saved["test_labels"].shape == (16,)
    ckpt = torch.load(run_path / "checkpoint.pt", weights_only=True)
    assert {"model", "optimizer", "center_loss", "epoch", "step", "rng", "config", "data_fingerprint"} <= set(ckpt)
    assert torch.equal(ckpt["center_loss"]["centers"], torch.from_numpy(saved["centers"]))


def test_an_existing_folder_is_refused_then_overwritten(run_path, run_cli, mnist):
    run_path.mkdir(parents=True)
    (run_path / ".centerloss").write_text("made by centerloss\n")  # a folder the tool made
    (run_path / "metrics.csv").write_text("an old run's file\n")
    again = run_cli("train", *mnist.args, *TINY)
    assert again.exit_code == 2 and "--resume" in again.output and "--overwrite" in again.output
    assert (run_path / "metrics.csv").read_text() == "an old run's file\n"
    assert run_cli("train", *mnist.args, *TINY, "--overwrite").exit_code == 0
    assert read_metrics(run_path)[0]["epoch"] == 1.0


def test_config_file_and_flags_that_win_over_it(run_cli, mnist, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('lambda = 0.1\nalpha = 0.25\nname = "fromfile"\ntrain_limit = 100\n')
    result = run_cli("train", "--config", cfg, *mnist.args, *TINY, "--alpha", "0.75")
    assert result.exit_code == 0, result.output
    config = json.loads(Path("outputs/fromfile/config.json").read_text())
    assert config["lambda"] == 0.1 and config["alpha"] == 0.75 and config["train_limit"] == 32


BAD = [
    (["--lambda", "-0.1"], "lambda = -0.1: expected a number >= 0"),
    (["--alpha", "1.5"], "alpha = 1.5: expected a number in [0, 1]"),
    (["--alpha", "nan"], "alpha = nan: expected a finite number"),
    (["--epochs", "0"], "epochs = 0: expected an integer in [1, 1,000,000]"),
    (["--batch-size", "0"], "batch_size = 0: expected an integer in [1, 1,000,000]"),
    (["--device", "tpu"], "device = 'tpu': expected auto, cpu, cuda, cuda:N or mps"),
    (["--seed", "18446744073709551616"], "seed = 18446744073709551616: expected an integer in [0, 2^32)"),
    (["--lr-milestones", "5000,x"], "lr_milestones = '5000,x': expected a list of integers"),

    (["--config", "missing.toml"], "config file missing.toml does not exist"),
]
if not torch.cuda.is_available():
    BAD.append((["--device", "cuda"], "device 'cuda' asked for, but this machine has no CUDA device"))


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_are_one_line_errors_that_leave_no_run_folder(run_cli, mnist, args, message):
    result = run_cli("train", *mnist.args, *TINY, *args)
    assert result.exit_code != 0
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not Path("outputs").exists()


@pytest.mark.parametrize("text,message", [
    ("lamda = 0.1\n", "unknown key 'lamda' in bad.toml"),
    ('epochs = "three"\n', "epochs = 'three' in bad.toml: expected an integer"),
    ("alpha = 2.0\n", "alpha = 2.0 in bad.toml: expected a number in [0, 1]"),
    ("lambda = \n", "bad.toml is not valid TOML"),
])
def test_bad_config_files_name_the_key_and_the_file(run_cli, mnist, text, message):
    Path("bad.toml").write_text(text)
    result = run_cli("train", "--config", "bad.toml", *mnist.args, *TINY)
    assert result.exit_code != 0 and message in result.output, result.output
    assert not Path("outputs").exists()


def test_data_command_reports_source_and_counts(run_cli, mnist):
    result = run_cli("data", *mnist.args)
    assert result.exit_code == 0, result.output
    assert "found in" in result.output
    counts = [line for line in result.output.splitlines() if line.startswith(("train:", "test:"))]
    assert len(counts) == 2 and "per class (0, 1, 2, 3, 4, 5, 6, 7, 8, 9): " in counts[0]


def test_data_command_with_nothing_anywhere_fails_clearly(run_cli, tmp_path):
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    result = run_cli("data", "--data-dir", not_a_dir)
    assert result.exit_code != 0 and "not a directory" in result.output


def test_resume_is_exact_whatever_the_thread_count(run_cli, mnist):
    """Two epochs in one go == one epoch, stop, and resume for the second, in a process with other threads:
    CPU sums depend on the thread count, so the run keeps the count it started with."""
    common = [*mnist.args, *tiny(epochs=2, train_limit=16)]  # 2 steps an epoch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as a `sweep --jobs 2` worker on 2 cores
    try:
        assert run_cli("train", *common, "--name", "whole").exit_code == 0
        assert run_cli("train", *common, "--epochs", "1", "--name", "split").exit_code == 0
        torch.set_num_threads(2)  # as the printed `centerloss train --resume` command
        resumed = run_cli("train", *common, "--epochs", "2", "--name", "split", "--resume")
        assert torch.get_num_threads() == 2  # given back to the process afterwards
    finally:
        torch.set_num_threads(threads)
    assert resumed.exit_code == 0, resumed.output
    assert torch.load("outputs/split/checkpoint.pt", weights_only=True)["threads"] == 1
    a = torch.load("outputs/whole/checkpoint.pt", weights_only=True)
    b = torch.load("outputs/split/checkpoint.pt", weights_only=True)
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), k
    assert torch.equal(a["center_loss"]["centers"], b["center_loss"]["centers"])
    assert a["step"] == b["step"] == 4
    ra, rb = read_metrics("outputs/whole"), read_metrics("outputs/split")
    for row_a, row_b in zip(ra, rb, strict=True):
        assert {k: v for k, v in row_a.items() if k != "seconds"} == {k: v for k, v in row_b.items() if k != "seconds"}
    # Resuming a finished run trains nothing.
    again = run_cli("train", *common, "--epochs", "2", "--name", "split", "--resume")
    assert again.exit_code == 0 and "already complete" in again.output




def test_the_schedule_is_exactly_iterations_steps_with_a_last_partial_epoch(run_cli, mnist):
    """32 images in batches of 8 are 4 steps an epoch: 10 iterations are epochs of 4, 4 and 2 steps,
    and the partial third is evaluated and plotted like the others."""
    result = run_cli("train", *mnist.args, *tiny(epochs=None, iterations=10, plots=True))
    assert result.exit_code == 0, result.output
    run = mnist.run(epochs=None, iterations=10)
    rows = read_metrics(run)
    assert [(r["epoch"], r["step"]) for r in rows] == [(1, 4), (2, 8), (3, 10)]
    assert (run / "plots" / "test_epoch_003.png").is_file() and (run / "features" / "epoch_003.npz").is_file()
    again = run_cli("train", *mnist.args, *tiny(epochs=None, iterations=12), "--resume")  # 2 more steps
    assert again.exit_code == 0, again.output
    # Epoch 3 was finished early as the last one; the 2 steps more make an epoch 4 that ends on the grid.
    assert [(r["epoch"], r["step"]) for r in read_metrics(run)] == [(1, 4), (2, 8), (3, 10), (4, 12)]


@in_background("piped train")
def piped_train(cwd: Path, mnist) -> subprocess.CompletedProcess:
    no_quiet = tiny(epochs=2)[:-1]  # progress bars asked for, but stdout and stderr are pipes here
    return run_process([sys.executable, "-m", "centerloss_cli", "train", *mnist.args, *no_quiet], cwd)


def test_piped_output_has_one_plain_line_per_epoch(background, mnist):
    """In a log file (nohup, a cluster job) each epoch used to be one line joined by \\r, with no accuracy."""
    cwd, done = background["piped train"]
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stdout + done.stderr
    lines = [ln for ln in done.stdout.splitlines() if re.match(r"epoch \d+/2  train acc", ln)]
    rows = read_metrics(cwd / mnist.run())
    assert len(lines) == 2 and len(rows) == 2
    for line, row in zip(lines, rows):
        assert f"test acc {100 * row['test_acc']:.2f}%" in line and f"test ratio {row['test_ratio']:.3f}" in line


def test_the_fast_recipe_resolves_and_trains(run_cli, mnist, monkeypatch):
    """--config fast on a tiny run: its settings resolve, name the run, and set each epoch's rate. It smooths no
    labels, so that --lambda 0 is softmax alone (its label smoothing 0.05 compacted the features by itself)."""
    cpu_bf16(monkeypatch, avx512_bf16=False)  # auto takes fp32 on every CPU: bf16 emulated would cost seconds
    fast = resolve_config("fast")
    assert (fast.lam, fast.lr_schedule, fast.warmup, fast.grad_clip, fast.label_smoothing, fast.iterations) == (
        0.03, "linear", 100, 2.0, 0.0, 1400)
    result = run_cli("train", "--config", "fast", *mnist.args, *tiny(warmup=2, epochs=None, iterations=8))
    assert result.exit_code == 0, result.output
    run = mnist.run(lam=0.03, lr=0.1, lr_schedule="linear", warmup=2, grad_clip=2.0, epochs=None,
                    iterations=8)
    assert run.name.startswith("lambda0.03_alpha0.5_seed0_") and "_linear_warmup2_clip2" in run.name
    assert "_ls" not in run.name  # no label smoothing
    # epochs end at steps 4 and 8: 2 of the 6 steps after the warm-up done, then all of them
    assert [r["lr"] for r in read_metrics(run)] == pytest.approx([0.1 * (1 - 2 / 6), 0.0])
    softmax_only = run_cli("train", "--config", "fast", "--lambda", "0", *mnist.args,
                           *tiny(warmup=2, epochs=None, iterations=4))
    assert softmax_only.exit_code == 0, softmax_only.output
    saved = json.loads((mnist.run(lam=0.0, lr=0.1, lr_schedule="linear", warmup=2, grad_clip=2.0,
                                  epochs=None, iterations=4) / "config.json").read_text())
    assert (saved["lambda"], saved["label_smoothing"]) == (0.0, 0.0)


def test_version_help_and_a_warning_for_hundreds_of_epochs(run_cli, mnist):
    from centerloss_cli import __version__

    assert run_cli("--version").output.strip() == f"centerloss {__version__}"
    assert "train [OPTIONS]" in run_cli("train", "-h").output  # -h as well as --help
    Path("outputs/mine").mkdir(parents=True)
    (Path("outputs/mine") / "thesis.tex").write_text("x")  # refused before training: this test trains nothing
    result = run_cli("train", *mnist.args, "--train-limit", "2000", "--name", "mine")
    assert result.exit_code == 2
    assert "--train-limit 2000 without --epochs: the 10000 iterations are 625 epochs of 16 batches" in result.output


def api_blocks() -> list[str]:
    """The Python examples of the README and of docs/python-api.md, each once (the README repeats one)."""
    return list(dict.fromkeys(python_blocks(README) + python_blocks(DOCS / "python-api.md")))


@in_background("readme example")
def readme_example(cwd: Path, mnist) -> subprocess.CompletedProcess:
    """The README's and the Python API page's examples, each saved as a file and run with `python file.py`."""
    blocks = api_blocks()
    assert len(blocks) == 1
    if not mnist.real:  # the synthetic stand-in is not MNIST: let it through the md5 check
        blocks[0] = blocks[0].replace('output_dir="outputs/notebook"', 'output_dir="outputs/notebook", verify=False')
    (cwd / "example.py").write_text(blocks[0])
    env = {"CENTERLOSS_DATA": str(mnist.root)}
    first = run_process([sys.executable, "example.py"], cwd, env)
    return first, run_process([sys.executable, "example.py"], cwd, env)  # a user runs it again


def test_the_readme_python_examples_run_as_a_plain_script(background):
    """Saved without an `if __name__ == "__main__":` guard, as a user would. The plotting process used to
    re-import such a script, which then trained again in the child and found its own run folder locked."""
    assert len(api_blocks()) == 1 and "__main__" not in api_blocks()[0]
    cwd, (done, again) = background["readme example"]
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr[-3000:]
    # The second run finds its run finished and says the same result: it used to stop at "already exists".
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-3000:]
    assert done.stdout.splitlines()[-2:] == again.stdout.splitlines()[-2:]
    run = next((cwd / "outputs" / "notebook").iterdir())
    assert (run / "features" / "epoch_001.npz").is_file() and (run / "plots" / "curves.png").is_file()
    epochs = sorted(p.name for p in (run / "plots").glob("*_epoch_*.png"))
    assert epochs == ["test_epoch_001.png", "train_epoch_001.png"]


def test_tensorboard_logs_scalars_and_the_scatter_or_says_what_to_install(run_path, run_cli, mnist, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        result = run_cli("train", *mnist.args, *TINY, "--tensorboard")
        assert result.exit_code == 2 and "pip install 'centerloss-cli[tensorboard]'" in result.output
        assert not run_path.exists()  # refused before anything was written
        return
    logged = run_cli("train", *mnist.args, *TINY, "--tensorboard")
    assert logged.exit_code == 0 and "features/, tensorboard/)" in logged.output
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_path / "tensorboard")).Reload()
    assert {"losses/train_center_loss", "accuracy/test_acc", "compactness/test_ratio"} <= set(events.Tags()["scalars"])
    assert events.Tags()["images"] == ["features/test"]
    assert events.Scalars("accuracy/test_acc")[0].value == pytest.approx(read_metrics(run_path)[0]["test_acc"])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)  # as without the extra
    again = run_cli("train", *mnist.args, *tiny(epochs=2), "--tensorboard", "--resume")
    assert again.exit_code == 2 and "pip install 'centerloss-cli[tensorboard]'" in again.output


def test_help_names_every_built_in_config_and_config_completes_them(run_cli, monkeypatch, tmp_path):
    assert "(fast, paper, quick)" in " ".join(run_cli("train", "--help").output.split())
    from centerloss_cli.settings.options import complete_config

    (tmp_path / "figures.toml").write_text("")  # run_cli's working folder: a config file of the user's
    assert complete_config("") == ["fast", "paper", "quick", "figures.toml"]
    assert complete_config("f") == ["fast", "figures.toml"] and complete_config("q") == ["quick"]
