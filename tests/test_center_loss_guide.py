"""docs/center-loss.md, "Center loss in your own model": its code blocks run (the DDP one under torchrun on two
processes), each relation its migration table states holds against the re-implementations' own
formulas, written out here, and misuse is loud."""
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import DOCS, in_background, python_blocks, run_process
from test_center_loss_ddp import free_port

from centerloss_cli.core.center_loss import CenterLoss


def guide_blocks() -> list[str]:
    return python_blocks(DOCS / "center-loss.md")


@in_background("guide, one device")
def one_device(cwd: Path, mnist):
    (cwd / "one.py").write_text(guide_blocks()[0])
    return run_process([sys.executable, "one.py"], cwd)


@in_background("guide, DDP on two processes")
def two_processes(cwd: Path, mnist) -> list[subprocess.CompletedProcess]:
    """Two processes with the variables torchrun gives its workers. (torchrun itself, in torch 2.14, let
    half the runs abort at exit: "terminate called without an active exception", after the script ended.)"""
    (cwd / "ddp.py").write_text(guide_blocks()[1])
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": free_port(), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1"}
    ranks = [subprocess.Popen([sys.executable, "ddp.py"], cwd=cwd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    return [subprocess.CompletedProcess(p.args, p.wait(300), p.stdout.read()) for p in ranks]


def test_the_guides_blocks_run(background):
    assert len(guide_blocks()) == 2
    _, one = background["guide, one device"]
    assert one.returncode == 0 and "torch.Size([100, 16])" in one.stdout, one.stderr[-3000:]
    _, ranks = background["guide, DDP on two processes"]
    for rank, done in enumerate(ranks):  # the block itself asserts that the ranks hold the same centers, weights
        assert f"rank {rank} of 2: the same centers and weights on every rank" in done.stdout, done.stdout[-3000:]
        assert done.returncode == 0 or ended_then_aborted(done), done.stdout[-3000:]


def ended_then_aborted(done: subprocess.CompletedProcess) -> bool:
    """gloo in torch 2.14 now and then aborts a process as the interpreter exits, after the script has ended
    and destroyed its process group (once in a CI run; never in 90 runs here, alone or beside other work).
    The block's own checks have passed by then, so only that abort, after its last line, is let through."""
    return done.returncode == -signal.SIGABRT and done.stdout.endswith(
        "every rank\nterminate called without an active exception\n")


# --- the re-implementations, as they compute -----------------------------------------------------------

def kaiyangzhou_loss(x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """KaiyangZhou/pytorch-center-loss, center_loss.py: CenterLoss.forward."""
    batch_size, num_classes = x.size(0), centers.size(0)
    distmat = torch.pow(x, 2).sum(dim=1, keepdim=True).expand(batch_size, num_classes) + \
        torch.pow(centers, 2).sum(dim=1, keepdim=True).expand(num_classes, batch_size).t()
    distmat = distmat.addmm(x, centers.t(), beta=1, alpha=-2)
    classes = torch.arange(num_classes).expand(batch_size, num_classes)
    mask = labels.unsqueeze(1).expand(batch_size, num_classes).eq(classes)
    return (distmat * mask.float()).clamp(min=1e-12, max=1e12).sum() / batch_size


def kaiyangzhou_center_step(x, centers, labels, weight_cent: float, lr_cent: float) -> torch.Tensor:
    """Its main.py: the loss scaled by weight_cent, the centers' grad by 1/weight_cent, SGD at lr_cent."""
    c = centers.clone().requires_grad_(True)
    (weight_cent * kaiyangzhou_loss(x, c, labels)).backward()
    return (c - lr_cent * c.grad / weight_cent).detach()


def jxgu_loss(x, centers, labels) -> torch.Tensor:
    """jxgu1016/MNIST_center_loss_pytorch, CenterLoss.py: CenterlossFunc.forward, size_average=True."""
    return (x - centers.index_select(0, labels)).pow(2).sum() / 2.0 / x.size(0)


def jxgu_center_step(x, centers, labels, lr: float) -> torch.Tensor:
    """CenterlossFunc.backward's grad of the centers (Eq. 4's delta over the batch size), by SGD at lr."""
    diff = centers.index_select(0, labels) - x
    counts = centers.new_ones(centers.size(0)).scatter_add_(0, labels, centers.new_ones(labels.size(0)))
    grad = centers.new_zeros(centers.size()).scatter_add_(0, labels.unsqueeze(1).expand(x.size()), diff)
    return centers - lr * grad / counts.view(-1, 1) / x.size(0)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(3)
    return torch.randn(24, 5, generator=g), torch.randn(7, 5, generator=g), torch.randint(0, 7, (24,), generator=g)


def ours(centers: torch.Tensor, rule: str = "paper") -> CenterLoss:
    cl = CenterLoss(num_classes=centers.shape[0], feat_dim=centers.shape[1], rule=rule)
    cl.centers.copy_(centers)
    return cl


def test_kaiyangzhou_is_twice_our_loss_and_gradient_and_twice_our_sgd_step(batch):
    x, centers, labels = batch
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    theirs, mine = kaiyangzhou_loss(xa, centers, labels), ours(centers)(xb, labels)
    assert theirs.item() == pytest.approx(2 * mine.item(), abs=1e-6)  # λ = 2 × weight_cent
    theirs.backward()
    mine.backward()
    assert torch.allclose(xa.grad, 2 * xb.grad, atol=1e-6)
    for weight_cent in (1.0, 0.003):  # their 1/weight_cent makes the step independent of it
        stepped = kaiyangzhou_center_step(x, centers, labels, weight_cent, lr_cent=0.5)
        cl = ours(centers, "sgd")
        cl.update(x, labels, alpha=2 * 0.5)  # α = 2 × lr_cent
        assert torch.allclose(cl.centers, stepped, atol=1e-6)


def test_jxgu_is_our_loss_and_our_paper_step_over_the_batch_size(batch):
    x, centers, labels = batch
    # λ = loss_weight
    assert jxgu_loss(x, centers, labels).item() == pytest.approx(ours(centers)(x, labels).item(), abs=1e-6)
    stepped = jxgu_center_step(x, centers, labels, lr=0.5)
    cl = ours(centers)
    cl.update(x, labels, alpha=0.5 / len(x))  # α = its center lr / batch size
    assert torch.allclose(cl.centers, stepped, atol=1e-6)


# --- misuse, and what real models bring ---------------------------------------------------------------------

def test_forgetting_update_warns_once_and_an_optimizer_on_it_is_told_why():
    cl = CenterLoss(num_classes=4, feat_dim=3)
    x, y = torch.randn(6, 3, requires_grad=True), torch.tensor([0, 1, 2, 3, 0, 1])
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(4):
            cl(x, y).backward()
    assert len(seen) == 1 and "update() never called" in str(seen[0].message)
    with pytest.warns(UserWarning, match="its centers are a buffer moved by update"):
        with pytest.raises(ValueError, match="empty parameter list"):
            torch.optim.SGD(cl.parameters(), lr=0.5)
    fine = CenterLoss(num_classes=4, feat_dim=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(4):  # used as the guide says: no warning
            fine(x, y).backward()
            fine.update(x, y, alpha=0.5)


@pytest.mark.parametrize("features,labels,message", [
    (torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]), r"features of shape \(4, 3\): expected \(batch, 2\)"),
    (torch.zeros(4, 2), torch.tensor([[0, 1, 2, 3]]), r"labels of shape \(1, 4\): expected \(4,\), one per row"),
    (torch.zeros(4, 2), torch.tensor([0.0, 1.0, 2.0, 3.0]), r"labels of dtype torch.float32: expected integer"),
    (torch.zeros(4, 2), torch.tensor([0, 1, 2, 5]), r"labels must be in \[0, 5\): got 5"),
])
def test_inputs_that_do_not_fit_are_one_line_naming_the_shapes(features, labels, message):
    with pytest.raises(ValueError, match=message):
        CenterLoss(num_classes=5, feat_dim=2)(features, labels)


def test_bf16_features_under_autocast_keep_fp32_centers_and_the_state_round_trips():
    cl = CenterLoss(num_classes=100, feat_dim=128)
    net = torch.nn.Linear(64, 128)
    x, y = torch.randn(32, 64), torch.randint(0, 100, (32,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = net(x)
        loss = cl(features, y)
    assert features.dtype == torch.bfloat16 and loss.dtype == torch.float32
    loss.backward()
    cl.update(features, y, alpha=0.5)
    assert cl.centers.dtype == torch.float32 and torch.isfinite(cl.centers).all()
    again = CenterLoss(num_classes=100, feat_dim=128)
    again.load_state_dict(cl.state_dict())
    assert torch.equal(again.centers, cl.centers)
