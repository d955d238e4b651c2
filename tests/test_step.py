"""One step for one run or K stacked runs (core/step.py): for one run it is the plain step, op for op (held
to a reference written out below, fp32 and bf16, every center update); stacked runs train as they would
alone; and what a CUDA graph replays, run eagerly on the CPU, is the eager step."""
import pytest
import torch
import torch.nn.functional as F

from centerloss_cli.core.center_loss import center_loss, move_centers
from centerloss_cli.core.precision import autocast
from centerloss_cli.core.state import new_state
from centerloss_cli.core.step import Stack, set_lr, step_numerics, take_step
from centerloss_cli.settings.config import TrainConfig


def batches(n=5, m=16):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(m, 1, 28, 28, generator=g), torch.randint(0, 10, (m,), generator=g)) for _ in range(n)]


def plain_step(state, x, y):
    """The step of one run as the paper's loop reads, written out: the reference the shared step must equal."""
    cfg = state.config
    state.optimizer.zero_grad()
    lr = set_lr(state.optimizer, cfg, state.step, state.total_steps)
    state.model.train()
    with autocast(cfg.precision, x.device):
        features, logits = state.model(x)
    features, logits = features.float(), logits.float()
    softmax = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
    center = center_loss(features, state.center_loss.centers, y)
    (softmax + cfg.lam * center if cfg.lam else softmax).backward()
    if cfg.grad_clip:
        state.optimizer.clip(cfg.grad_clip)
    state.optimizer.step(lr)
    move_centers(state.center_loss.centers, state.center_loss.velocity, features.detach(), y, cfg.center_update,
                 cfg.alpha, lr, cfg.momentum)
    state.step += 1
    return torch.stack([softmax.detach(), center.detach()])


# Each rule in fp32, and bf16 once, with the center loss, smoothing and clipping (autocast covers the network;
# the rules run in fp32 either way): in CI's pass that plays an AVX2 CPU a bf16 step is emulated, 12 times an
# fp32 one.
@pytest.mark.parametrize("rule, lam, smoothing, clip, precision", [
    ("paper", 0.1, 0.0, 0.0, "fp32"), ("caffe", 0.01, 0.05, 2.0, "fp32"), ("sgd", 0.0, 0.0, 2.0, "fp32"),
    ("caffe", 0.01, 0.05, 2.0, "bf16")])
def test_the_step_of_one_run_is_the_plain_step_bit_for_bit(precision, rule, lam, smoothing, clip):
    """K = 1 is the general step with a leading dimension of one; its numbers must be the plain step's to the
    last bit (a run's checkpoint is unchanged by the step being shared with stacked runs)."""
    config = TrainConfig(precision=precision, center_update=rule, lam=lam, label_smoothing=smoothing,
                         grad_clip=clip, lr=0.1, warmup=2, lr_schedule="linear", epochs=1)
    shared, reference = new_state(config, n_train=1600), new_state(config, n_train=1600)
    for x, y in batches(2, m=8):  # the second step has momentum, and the learning rate warmed up
        assert torch.equal(take_step(Stack([shared]), x, y)[0], plain_step(reference, x, y))
    for p, q in zip(shared.model.parameters(), reference.model.parameters()):
        assert torch.equal(p, q)
    assert torch.equal(shared.center_loss.centers, reference.center_loss.centers)
    assert all(torch.equal(a, b) for a, b in zip(shared.optimizer.buffers, reference.optimizer.buffers))


def graph_path(stack, x, y):
    """As capture.CapturedStep runs a step: the host's part, the body with a tensor lr, then the count."""
    lr = torch.tensor(stack.prepare())
    out = step_numerics(stack, x, y, lr, graph=True)
    stack.advance()
    return out


@pytest.mark.parametrize("rule", ["paper", "caffe"])
def test_the_graphs_body_is_the_eager_step(rule):
    config = TrainConfig(center_update=rule, lr_schedule="linear", warmup=2, epochs=1)
    eager, graph = (new_state(config, n_train=80) for _ in range(2))
    for x, y in batches():
        a, b = take_step(Stack([eager]), x, y), graph_path(Stack([graph]), x, y)
        assert torch.allclose(a, b, atol=1e-5)
    assert eager.step == graph.step == 5
    for p, q in zip(eager.model.parameters(), graph.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    assert torch.allclose(eager.center_loss.centers, graph.center_loss.centers, atol=1e-5)
    assert not torch.equal(eager.center_loss.centers, new_state(config, 80).center_loss.centers)


def test_the_graphs_body_is_the_eager_step_for_stacked_runs():
    configs = [TrainConfig(lam=0.0, epochs=1), TrainConfig(lam=0.1, alpha=0.25, epochs=1)]
    eager, graph = ([new_state(c, n_train=80) for c in configs] for _ in range(2))
    eager_stack, graph_stack = Stack(eager), Stack(graph)
    for x, y in batches(3):
        assert torch.allclose(take_step(eager_stack, x, y), graph_path(graph_stack, x, y), atol=1e-5)
    for s in (eager_stack, graph_stack):
        s.finish()
    for a, b in zip(eager, graph):
        for p, q in zip(a.model.parameters(), b.model.parameters()):
            assert torch.allclose(p, q, atol=1e-5)


def test_stacked_runs_train_on_the_label_smoothed_loss_as_one_run_does():
    x, y = batches(1)[0]
    losses = {}
    for smoothing in (0.0, 0.1):
        configs = [TrainConfig(lam=lam, label_smoothing=smoothing, epochs=1) for lam in (0.0, 0.1)]
        losses[smoothing] = take_step(Stack([new_state(c, n_train=80) for c in configs]), x, y)
        # From the same initial weights the first step's losses agree to the last bit (later steps drift
        # apart in float rounding: vmap's batched kernels).
        for k, config in enumerate(configs):
            assert torch.equal(losses[smoothing][k], take_step(Stack([new_state(config, n_train=80)]), x, y)[0])
    assert (losses[0.1][:, 0] - losses[0.0][:, 0]).abs().min() > 1e-3  # the softmax term is the smoothed one
