"""The CUDA path, on a CUDA device: `pytest -m cuda` runs only these, and they skip, saying why, where
there is none. scripts/gpu_check.sh runs them on the device before its measurements."""
import os
import signal
import subprocess
import sys

import pytest
import torch
from conftest import DRIVER, checkpoint, max_difference, tiny

from centerloss_cli.rundir.files import read_metrics

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                   reason="no CUDA device here (pytest -m cuda on a GPU machine)")]
CUDA = ["--device", "cuda"]
# cuDNN picks convolution algorithms that may sum in another order from run to run, so two CUDA runs
# agree to a tolerance, not bit for bit (docs/gpu.md states it).
CUDA_TOLERANCE = 1e-4


def test_a_run_trains_captured_and_eager_alike_and_draws_its_plots(run_cli, mnist):
    args = [*mnist.args, *tiny(epochs=2), *CUDA]
    assert run_cli("train", *args, "--output-dir", "graph").exit_code == 0
    assert run_cli("train", *args, "--output-dir", "eager", "--cuda-graphs", "off").exit_code == 0
    graph, eager = mnist.run("graph"), mnist.run("eager")
    assert max_difference(checkpoint(graph), checkpoint(eager)) < CUDA_TOLERANCE
    assert [r["step"] for r in read_metrics(graph)] == [4.0, 8.0]
    plots = sorted(p.name for p in (graph / "plots").iterdir())
    assert plots == ["curves.png", "test_epoch_001.png", "test_epoch_002.png", "train_epoch_001.png",
                     "train_epoch_002.png"]


def test_ctrl_c_mid_epoch_then_resume_ends_where_an_unstopped_run_does(run_cli, mnist, tmp_path):
    args = [*mnist.args, *tiny(epochs=2), *CUDA]
    assert run_cli("train", *args, "--output-dir", "whole").exit_code == 0
    stopped = subprocess.run([sys.executable, str(DRIVER), "step", "6", "sigint", "--", "train", *args,
                              "--output-dir", "split"], env={**os.environ, "PYTHONPATH": str(DRIVER.parent)},
                             capture_output=True, text=True, timeout=300, cwd=os.getcwd())
    assert stopped.returncode == 128 + signal.SIGINT, stopped.stdout + stopped.stderr
    assert run_cli("train", *args, "--output-dir", "split", "--resume").exit_code == 0
    assert max_difference(checkpoint(mnist.run("whole")), checkpoint(mnist.run("split"))) < CUDA_TOLERANCE


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_every_precision_trains(run_cli, mnist, precision):
    result = run_cli("train", *mnist.args, *tiny(), *CUDA, "--precision", precision)
    assert result.exit_code == 0, result.output
    row = read_metrics(mnist.run(precision=precision))[0]
    assert all(torch.isfinite(torch.tensor(v)) for v in row.values())


def test_a_batched_sweep_matches_its_runs_trained_one_by_one(run_cli, mnist):
    sweep = ["sweep", "--lambda", "0,0.1", *mnist.args, *tiny(epochs=2), *CUDA]
    assert run_cli(*sweep, "--output-dir", "seq").exit_code == 0
    assert run_cli(*sweep, "--batched", "--output-dir", "bat").exit_code == 0
    for lam in (0.0, 0.1):
        a, b = mnist.run("seq", lam=lam), mnist.run("bat", lam=lam)
        assert max_difference(checkpoint(a), checkpoint(b)) < 1e-3  # vmap's kernels are other kernels


def test_center_loss_moves_to_the_device_and_checks_labels_there():
    from centerloss_cli.core.center_loss import CenterLoss

    cl = CenterLoss(num_classes=100, feat_dim=128).to("cuda")
    x = torch.randn(64, 128, device="cuda", requires_grad=True)
    y = torch.randint(0, 100, (64,), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = cl(x.to(torch.bfloat16), y)
    loss.backward()
    cl.update(x, y, alpha=0.5)
    assert cl.centers.device.type == "cuda" and cl.centers.dtype == torch.float32
    with pytest.raises(RuntimeError):  # checked on the device, without a sync: it surfaces at the next one
        cl(x, torch.full((64,), 100, device="cuda"))
        torch.cuda.synchronize()
