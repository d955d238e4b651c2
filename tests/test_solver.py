"""The written-out SGD against torch.optim.SGD: the same steps bit for bit, and checkpoints either can read."""
import pytest
import torch

from centerloss_cli.core.model import LeNetPP
from centerloss_cli.core.solver import SGD


def _grads(model, seed):
    g = torch.Generator().manual_seed(seed)
    _, logits = model(torch.randn(8, 1, 28, 28, generator=g))
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 10, (8,), generator=g)).backward()


def test_it_steps_as_torch_optim_sgd_bit_for_bit_and_shares_its_state_dict():
    torch.manual_seed(0)
    ours, theirs = LeNetPP(), LeNetPP()
    theirs.load_state_dict(ours.state_dict())
    sgd = SGD(ours.named_parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    named = list(theirs.named_parameters())
    reference = torch.optim.SGD([
        {"params": [p for n, p in named if not n.endswith("bias")], "lr": 0.05, "weight_decay": 5e-4},
        {"params": [p for n, p in named if n.endswith("bias")], "lr": 0.1, "weight_decay": 0.0},
    ], momentum=0.9)
    for step in range(4):
        if step == 2:  # a drop of the learning rate, as a schedule makes
            sgd.set_lr(0.01)
            for group, mult in zip(reference.param_groups, (1, 2)):
                group["lr"] = 0.01 * mult
        for model, opt in ((ours, sgd), (theirs, reference)):
            opt.zero_grad()
            _grads(model, step)
            opt.step()
        for (name, p), q in zip(ours.named_parameters(), theirs.parameters()):
            assert torch.equal(p, q), (step, name)
    saved = sgd.state_dict()
    assert saved["param_groups"][1]["lr"] == 0.02 and len(saved["state"]) == len(list(ours.parameters()))
    again = SGD(ours.named_parameters(), lr=1.0, momentum=0.9, weight_decay=5e-4)
    again.load_state_dict(reference.state_dict())  # a checkpoint of the earlier code, written by torch.optim
    assert all(torch.equal(a, b) for a, b in zip(again.buffers, sgd.buffers))
    assert [g["lr"] for g in again.param_groups] == [0.01, 0.02]
    reference.load_state_dict(saved)  # and the other way round


def test_clipping_caps_the_whole_gradients_norm_per_run():
    torch.manual_seed(0)
    model = LeNetPP()
    sgd = SGD(model.named_parameters(), lr=0.1, momentum=0.9, weight_decay=0.0)
    _grads(model, 0)
    norm = lambda: torch.sqrt(sum(p.grad.pow(2).sum() for p in model.parameters()))  # noqa: E731
    before = norm().item()
    sgd.clip(before * 2)  # under the cap: untouched
    assert norm().item() == pytest.approx(before)
    sgd.clip(before / 4)
    assert norm().item() == pytest.approx(before / 4, rel=1e-5)
    # K stacked runs: each by its own norm
    a, b = torch.zeros(3, 4), torch.zeros(3, 2)
    a.grad, b.grad = torch.ones(3, 4) * torch.tensor([[1.0], [10.0], [0.1]]), torch.zeros(3, 2)
    stacked = SGD([("a", a), ("b.bias", b)], lr=0.1, momentum=0.0, weight_decay=0.0)
    stacked.clip(5.0, members=3)
    assert a.grad.pow(2).sum(1).sqrt().tolist() == pytest.approx([2.0, 5.0, 0.2], rel=1e-5)
