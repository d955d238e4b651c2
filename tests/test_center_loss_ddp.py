"""CenterLoss under DistributedDataParallel: two processes on gloo, on the CPU. Every rank must hold the
same centers, those of one process that sees the whole global batches."""
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from conftest import in_background

WORKER = Path(__file__).with_name("ddp_worker.py")


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


@in_background("ddp on two ranks")
def two_ranks(cwd: Path, mnist) -> list[subprocess.CompletedProcess]:
    port, env = free_port(), {**os.environ, "PYTHONPATH": str(WORKER.parent)}
    ranks = [subprocess.Popen([sys.executable, str(WORKER), str(r), "2", port, str(cwd / "out")], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    return [subprocess.CompletedProcess(p.args, p.wait(300), p.stdout.read()) for p in ranks]


def one_process_on_the_whole_batches() -> torch.Tensor:
    sys.path.insert(0, str(WORKER.parent))
    import ddp_worker

    from centerloss_cli.core.center_loss import CenterLoss

    torch.manual_seed(0)
    model, center_loss = ddp_worker.Net(), CenterLoss(ddp_worker.CLASSES, ddp_worker.DIM)
    ddp_worker.train(model, center_loss, ddp_worker.batches())
    return center_loss.centers


def test_ranks_hold_the_centers_of_the_whole_global_batch(background):
    cwd, ranks = background["ddp on two ranks"]
    for done in ranks:
        assert done.returncode == 0, done.stdout[-3000:]
    r0, r1 = (torch.load(cwd / f"out.rank{r}.pt", weights_only=True) for r in range(2))
    assert torch.equal(r0["centers"], r1["centers"])  # bit-identical on every rank
    reference = one_process_on_the_whole_batches()
    assert torch.allclose(r0["centers"], reference, atol=1e-5), (r0["centers"] - reference).abs().max()
    assert torch.equal(r0["weight"], r1["weight"])  # DDP keeps the network identical too


def test_a_per_rank_update_would_drift_apart_and_fail_that(background):
    """What every re-implementation does under DDP: each rank moves its centers by its own part."""
    cwd, _ = background["ddp on two ranks"]
    r0, r1 = (torch.load(cwd / f"out.rank{r}.pt", weights_only=True) for r in range(2))
    assert (r0["per_rank"] - r1["per_rank"]).abs().max() > 1e-2
    assert (r0["per_rank"] - one_process_on_the_whole_batches()).abs().max() > 1e-2
