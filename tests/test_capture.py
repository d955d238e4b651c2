"""What a CUDA graph replays, run eagerly on the CPU: the step's body with the learning rate as a tensor
on the device must be the eager step, for one run and for stacked runs, whichever center update."""
import pytest
import torch

from centerloss_cli.config import TrainConfig
from centerloss_cli.core.stacked import StackedStep
from centerloss_cli.core.step import PlainStep, new_state


def batches(n=5):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)) for _ in range(n)]


def graph_path(step, x, y):
    """As capture.CapturedStep runs a step: the host's part, the body with a tensor lr, then the count."""
    lr = torch.tensor(step.prepare())
    out = step.body(x, y, lr)
    step.advance()
    return out


@pytest.mark.parametrize("rule", ["paper", "caffe"])
def test_the_graphs_body_is_the_eager_step(rule):
    config = TrainConfig(center_update=rule, lr_schedule="linear", warmup=2, epochs=1)
    eager, graph = (new_state(config, n_train=80) for _ in range(2))
    for x, y in batches():
        a, b = PlainStep([eager])(x, y), graph_path(PlainStep([graph]), x, y)
        assert torch.allclose(a, b, atol=1e-5)
    assert eager.step == graph.step == 5
    for p, q in zip(eager.model.parameters(), graph.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5)
    assert torch.allclose(eager.center_loss.centers, graph.center_loss.centers, atol=1e-5)
    assert not torch.equal(eager.center_loss.centers, new_state(config, 80).center_loss.centers)


def test_the_graphs_body_is_the_eager_step_for_stacked_runs():
    configs = [TrainConfig(lam=0.0, epochs=1), TrainConfig(lam=0.1, alpha=0.25, epochs=1)]
    eager, graph = ([new_state(c, n_train=80) for c in configs] for _ in range(2))
    eager_step, graph_step = StackedStep(eager), StackedStep(graph)
    for x, y in batches(3):
        assert torch.allclose(eager_step(x, y), graph_path(graph_step, x, y), atol=1e-5)
    for s in (eager_step, graph_step):
        s.finish()
    for a, b in zip(eager, graph):
        for p, q in zip(a.model.parameters(), b.model.parameters()):
            assert torch.allclose(p, q, atol=1e-5)



def test_stacked_runs_train_on_the_label_smoothed_loss_as_one_run_does():
    x, y = batches(1)[0]
    losses = {}
    for smoothing in (0.0, 0.1):
        configs = [TrainConfig(lam=lam, label_smoothing=smoothing, epochs=1) for lam in (0.0, 0.1)]
        losses[smoothing] = StackedStep([new_state(c, n_train=80) for c in configs])(x, y)
        # From the same initial weights the first step's losses agree to the last bit (later steps drift
        # apart in float rounding: vmap's batched kernels).
        for k, config in enumerate(configs):
            assert torch.equal(losses[smoothing][k], PlainStep([new_state(config, n_train=80)])(x, y)[0])
    assert (losses[0.1][:, 0] - losses[0.0][:, 0]).abs().min() > 1e-3  # the softmax term is the smoothed one
