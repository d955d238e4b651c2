"""`sweep --batched`: K runs as one stacked model must give what K sequential runs give."""
from pathlib import Path

import pytest
from conftest import TINY, assert_each_matches_only_itself, checkpoint, tiny

from centerloss_cli.engine.training import train_stacked
from centerloss_cli.rundir.files import read_metrics


def test_stacked_runs_match_sequential_runs(mnist, tmp_path, monkeypatch, runtime, trained):
    """Two runs that differ in lambda and in alpha, stacked into one model, against each trained alone."""
    monkeypatch.chdir(tmp_path)
    # 16 images: 2 steps an epoch, and 2 epochs, so the runs are restacked once from their states.
    members = [{"lam": 0.0, "alpha": 0.5}, {"lam": 0.1, "alpha": 0.25}]
    for m in members:
        trained.copy(2, mnist.run("seq", train_limit=16, **m), train_limit=16, plots=False, **m)
    configs = [mnist.config("bat", train_limit=16, epochs=2, **m) for m in members]
    results = train_stacked(configs, runtime=runtime, progress=False)
    assert [r.trained_epochs for r in results] == [2, 2]
    names = [r.run_dir.name for r in results]
    for name in names:
        seq, bat = read_metrics(Path("seq") / name), read_metrics(Path("bat") / name)
        assert [r["epoch"] for r in bat] == [1.0, 2.0]
        for a, b in zip(seq, bat):
            assert a["lr"] == b["lr"] and a["step"] == b["step"]
            for key in ("train_softmax_loss", "train_center_loss", "test_softmax_loss", "test_center_loss"):
                assert b[key] == pytest.approx(a[key], rel=1e-2, abs=1e-3), (name, key)
        ckpt = checkpoint(Path("bat") / name)
        assert len([s["momentum_buffer"] for s in ckpt["optimizer"]["state"].values()]) == len(ckpt["model"])
    # The stacked model runs other float kernels (vmap's batched convolutions; the sequential CPU path
    # is channels_last), so the two agree to float tolerance, not bit for bit; and each run agrees with
    # its own twin only.
    assert_each_matches_only_itself(Path("seq"), Path("bat"), names, tol=1e-3)


def test_a_batched_member_resumes_on_its_own(run_cli, mnist):
    common = [*mnist.args, *tiny(train_limit=16), "--output-dir", "bat"]  # 2 steps an epoch
    assert run_cli("sweep", "--lambda", "0,0.1", "--batched", *common).exit_code == 0
    more = run_cli("train", *common, "--lambda", "0.1", "--epochs", "2", "--resume")
    assert more.exit_code == 0, more.output
    assert [r["epoch"] for r in read_metrics(mnist.run("bat", train_limit=16, lam=0.1))] == [1.0, 2.0]
    again = run_cli("sweep", "--lambda", "0,0.1", "--batched", *common)
    assert again.exit_code == 0 and "0 trained now" in again.output


def test_a_diverging_sweep_fails_alike_batched_or_not(run_cli, mnist):
    args = ["sweep", "--lambda", "0,1e30", *mnist.args, *TINY]
    sequential = run_cli(*args, "--output-dir", "seq")
    batched = run_cli(*args, "--batched", "--output-dir", "bat")
    assert sequential.exit_code == batched.exit_code == 1, (sequential.output, batched.output)
    errors = lambda result: [ln for ln in result.output.splitlines() if ln.startswith("Error:")]  # noqa: E731
    assert errors(sequential) == errors(batched) and len(errors(sequential)) == 1
    name = mnist.run(lam=1e30).name
    assert errors(sequential)[0].startswith(f"Error: run {name}: the loss became NaN or inf at epoch 1")
    assert "no checkpoint was written" in errors(sequential)[0]


def test_batched_and_jobs_do_not_combine(run_cli, mnist):
    result = run_cli("sweep", "--lambda", "0,0.1", "--batched", "--jobs", "2", *mnist.args, *TINY)
    assert result.exit_code != 0 and "--batched" in result.output
