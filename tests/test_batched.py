"""`sweep --batched`: K runs as one stacked model must give what K sequential runs give."""
from pathlib import Path

import pytest
import torch

from centerloss_cli.runs import read_metrics
from conftest import TINY

TWO_EPOCHS = [*TINY[:-3], "--epochs", "2", "--quiet"]
RUNS = ["lambda0_alpha0.5_seed0", "lambda0.1_alpha0.25_seed0"]


def test_batched_sweep_matches_sequential_runs(run_cli, mnist):
    common = [*mnist.args, *TWO_EPOCHS]
    for lam, alpha in (("0", "0.5"), ("0.1", "0.25")):
        assert run_cli("train", *common, "--lambda", lam, "--alpha", alpha, "--output-dir", "seq").exit_code == 0
    batched = run_cli("sweep", "--lambda", "0,0.1", "--alpha", "0.5,0.25", "--batched", *common, "--output-dir", "bat")
    assert batched.exit_code == 0, batched.output
    assert "4 runs (4 trained now)" in batched.output
    # The stacked model runs other float kernels (vmap's batched convolutions; the sequential CPU path
    # is channels_last), so the two agree to float tolerance, not bit for bit.
    tol = dict(rtol=1e-2, atol=1e-3)
    for name in RUNS:
        seq, bat = read_metrics(Path("seq") / name), read_metrics(Path("bat") / name)
        assert [r["epoch"] for r in bat] == [1.0, 2.0]
        for a, b in zip(seq, bat):
            for key in ("train_softmax_loss", "train_center_loss", "test_softmax_loss", "test_center_loss",
                        "test_acc", "test_ratio"):
                assert b[key] == pytest.approx(a[key], rel=1e-2, abs=1e-3), (name, key)
            assert a["lr"] == b["lr"] and a["step"] == b["step"]
        cs = torch.load(Path("seq") / name / "checkpoint.pt", weights_only=True)
        cb = torch.load(Path("bat") / name / "checkpoint.pt", weights_only=True)
        assert torch.allclose(cs["center_loss"]["centers"], cb["center_loss"]["centers"], **tol)
        for k, v in cs["model"].items():
            assert torch.allclose(v, cb["model"][k], **tol), k
        momentum = [s["momentum_buffer"] for s in cb["optimizer"]["state"].values()]
        assert len(momentum) == len(cs["model"])
    # That tolerance still tells members apart: another lambda and alpha give other centers and weights.
    a, b = (torch.load(Path("bat") / name / "checkpoint.pt", weights_only=True) for name in RUNS)
    assert not torch.allclose(a["center_loss"]["centers"], b["center_loss"]["centers"], **tol)
    assert not torch.allclose(a["model"]["feature.0.weight"], b["model"]["feature.0.weight"], **tol)


def test_a_batched_member_resumes_on_its_own(run_cli, mnist):
    common = [*mnist.args, *TINY, "--output-dir", "bat"]
    assert run_cli("sweep", "--lambda", "0,0.1", "--batched", *common).exit_code == 0
    more = run_cli("train", *common, "--lambda", "0.1", "--epochs", "2", "--resume")
    assert more.exit_code == 0, more.output
    assert [r["epoch"] for r in read_metrics(Path("bat/lambda0.1_alpha0.5_seed0"))] == [1.0, 2.0]
    again = run_cli("sweep", "--lambda", "0,0.1", "--batched", *common)
    assert again.exit_code == 0 and "0 trained now" in again.output


def test_batched_and_jobs_do_not_combine(run_cli, mnist):
    result = run_cli("sweep", "--lambda", "0,0.1", "--batched", "--jobs", "2", *mnist.args, *TINY)
    assert result.exit_code != 0 and "--batched" in result.output
