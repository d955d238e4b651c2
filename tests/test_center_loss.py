import pytest
import torch
import torch.nn.functional as F

from centerloss_cli.core.center_loss import CenterLoss, center_delta, center_loss
from centerloss_cli.core.precision import float32_precision
from centerloss_cli.core.state import new_state
from centerloss_cli.core.step import set_lr, train_step
from centerloss_cli.settings.config import TrainConfig


def loss_with(centers, rule="paper"):
    cl = CenterLoss(num_classes=4, feat_dim=2, rule=rule)
    cl.centers.copy_(torch.tensor(centers, dtype=torch.float32))
    return cl


C = [[1.0, 2.0], [3.0, -1.0], [-2.0, 4.0], [5.0, 5.0]]


def test_loss_and_feature_gradient_on_zero_features():
    cl = loss_with(C)
    x = torch.zeros(4, 2, requires_grad=True)
    y = torch.tensor([0, 0, 2, 1])
    loss = cl(x, y)
    # sum ||0 - c_y||^2 / (2m) = (5 + 5 + 20 + 10) / 8
    assert loss.item() == pytest.approx(40 / 8)
    loss.backward()
    # dL/dx_i = (x_i - c_{y_i}) / m
    expected = -torch.tensor([C[0], C[0], C[2], C[1]]) / 4
    assert torch.allclose(x.grad, expected)
    assert not cl.centers.requires_grad


def test_paper_update_on_zero_features():
    cl = loss_with(C)
    cl.update(torch.zeros(4, 2), torch.tensor([0, 0, 2, 1]), alpha=0.5)
    c = torch.tensor(C)
    # class 0: n=2, delta = 2 c0 / 3 -> c0 (1 - 0.5 * 2/3); classes 1 and 2: n=1, delta = c / 2 -> 0.75 c
    expected = torch.stack([c[0] * (2 / 3), c[1] * 0.75, c[2] * 0.75, c[3]])
    assert torch.allclose(cl.centers, expected)


def test_paper_update_moves_toward_features():
    cl = loss_with(C)
    x = torch.tensor([[3.0, 2.0], [1.0, 0.0]])
    cl.update(x, torch.tensor([0, 0]), alpha=1.0)
    # delta = ((1-3) + (1-1), (2-2) + (2-0)) / 3 = (-2/3, 2/3)
    assert torch.allclose(cl.centers[0], torch.tensor([1 + 2 / 3, 2 - 2 / 3]))


def test_absent_class_keeps_its_center_and_alpha_zero_freezes_all():
    cl = loss_with(C)
    cl.update(torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 2, 2]), alpha=0.7)
    assert torch.equal(cl.centers[3], torch.tensor(C[3]))
    frozen = loss_with(C)
    frozen.update(torch.randn(6, 2), torch.tensor([0, 1, 1, 0, 2, 3]), alpha=0.0)
    assert torch.equal(frozen.centers, torch.tensor(C))


def test_sgd_update_is_the_autograd_gradient_step():
    cl = loss_with(C, rule="sgd")
    cl.update(torch.zeros(4, 2), torch.tensor([0, 0, 2, 1]), alpha=0.5)
    c = torch.tensor(C)
    # dL_C/dc_j = sum_{y_i=j} (c_j - x_i) / m: 2 c0 / 4, c1 / 4, c2 / 4, 0
    expected = torch.stack([c[0] * (1 - 0.5 * 2 / 4), c[1] * (1 - 0.5 / 4), c[2] * (1 - 0.5 / 4), c[3]])
    assert torch.allclose(cl.centers, expected)


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="center update 'adam'"):
        CenterLoss(rule="adam")


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(16, 1, 28, 28, generator=g), torch.randint(0, 10, (16,), generator=g)


@pytest.mark.parametrize("rule", ["paper", "sgd", "caffe"])
def test_lambda_zero_gives_exactly_the_softmax_gradient(rule):
    x, y = _batch()
    state = new_state(TrainConfig(lam=0.0, center_update=rule), n_train=16)
    reference = new_state(TrainConfig(lam=0.0), n_train=16).model
    train_step(state, x, y)
    # The same step with softmax alone, by hand, with the official net's lr and decay: biases at twice
    # the lr and without decay (lr_mult 2, decay_mult 0), every other parameter at lr with decay.
    named = list(reference.named_parameters())
    opt = torch.optim.SGD([
        {"params": [p for n, p in named if not n.endswith("bias")], "lr": 0.01, "weight_decay": 5e-4},
        {"params": [p for n, p in named if n.endswith("bias")], "lr": 0.02, "weight_decay": 0.0},
    ], momentum=0.9)
    _, logits = reference(x)
    F.cross_entropy(logits, y).backward()
    opt.step()
    for p, q in zip(state.model.parameters(), reference.parameters()):
        assert torch.equal(p, q)
    # The centers are still tracked with lambda = 0.
    assert not torch.equal(state.center_loss.centers, new_state(TrainConfig(), 16).center_loss.centers)


def test_positive_lambda_changes_the_network_gradient():
    x, y = _batch()
    plain = new_state(TrainConfig(lam=0.0), n_train=16)
    joint = new_state(TrainConfig(lam=0.1), n_train=16)
    train_step(plain, x, y)
    train_step(joint, x, y)
    assert not torch.equal(plain.model.feature[0].weight, joint.model.feature[0].weight)


def test_centers_are_saved_but_never_optimized():
    state = new_state(TrainConfig(), n_train=16)
    optimized = {id(p) for group in state.optimizer.param_groups for p in group["params"]}
    assert id(state.center_loss.centers) not in optimized
    assert "centers" in state.center_loss.state_dict()
    before = state.center_loss.centers.clone()
    train_step(state, *_batch())
    assert not torch.equal(before, state.center_loss.centers)


def test_one_center_loss_for_one_run_and_for_stacked_runs():
    g = torch.Generator().manual_seed(1)
    feats, centers = torch.randn(3, 8, 2, generator=g), torch.randn(3, 4, 2, generator=g)
    y = torch.randint(0, 4, (8,), generator=g)
    stacked = center_loss(feats, centers, y)
    assert stacked.shape == (3,)
    for k in range(3):
        assert torch.allclose(stacked[k], loss_with(centers[k].tolist())(feats[k], y))
        for rule in ("paper", "sgd", "caffe"):
            assert torch.allclose(center_delta(centers, feats, y, rule)[k], center_delta(centers[k], feats[k], y, rule))


def test_bf16_autocasts_the_network_but_keeps_losses_and_centers_in_fp32():
    x, y = _batch()
    fp32, bf16 = new_state(TrainConfig(), 16), new_state(TrainConfig(precision="bf16"), 16)
    seen = []
    bf16.model.classifier.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    plain, autocast = train_step(fp32, x, y), train_step(bf16, x, y)
    assert seen == [torch.bfloat16]  # the network really ran in bf16
    assert [t.dtype for t in autocast] == [torch.float32, torch.float32]
    assert bf16.center_loss.centers.dtype == torch.float32
    assert not torch.equal(fp32.model.feature[0].weight, bf16.model.feature[0].weight)
    assert torch.allclose(autocast[0], plain[0], rtol=0.05)  # but computed the same step, roughly


def test_tf32_switches_hold_for_the_run_only():
    switches = (torch.backends.cuda.matmul, torch.backends.cudnn.conv)
    before = [s.fp32_precision for s in switches]
    with float32_precision("tf32"):
        assert [s.fp32_precision for s in switches] == ["tf32", "tf32"]
    with float32_precision("fp32"):
        assert [s.fp32_precision for s in switches] == ["ieee", "ieee"]
    assert [s.fp32_precision for s in switches] == before


def test_biases_learn_at_twice_the_rate_without_decay():
    state = new_state(TrainConfig(), n_train=16)
    groups = state.optimizer.param_groups
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(0.01, 5e-4), (0.02, 0.0)]
    names = {id(p): n for n, p in state.model.named_parameters()}
    assert {names[id(p)] for p in groups[1]["params"]} == {
        "body.0.bias", "body.2.bias", "body.5.bias", "body.7.bias", "body.10.bias", "body.12.bias", "feature.0.bias"}
    set_lr(state.optimizer, state.config, 4999, 10_000)  # the last step before the first milestone
    assert [g["lr"] for g in groups] == pytest.approx([0.01, 0.02])
    set_lr(state.optimizer, state.config, 5000, 10_000)  # from the milestone on, both groups drop
    assert [g["lr"] for g in groups] == pytest.approx([0.008, 0.016])


def test_caffe_update_by_hand_over_two_steps_with_momentum():
    """The official solver: v <- 0.9 v + lr * delta, c <- c - v, with delta from Eq. 4 and no decay."""
    cl = loss_with(C, rule="caffe")
    y = torch.tensor([0, 0, 1])
    x1 = torch.tensor([[1.0, 0.0], [3.0, 2.0], [3.0, 1.0]])
    # Step 1, lr 0.5: delta_0 = ((1,2)-(1,0) + (1,2)-(3,2)) / 3 = (-2, 2)/3; delta_1 = ((3,-1)-(3,1)) / 2 = (0, -1).
    cl.update(x1, y, alpha=0.123, lr=0.5, momentum=0.9)  # alpha is not used by caffe
    v1 = {0: [-1 / 3, 1 / 3], 1: [0.0, -0.5]}
    assert cl.velocity[0].tolist() == pytest.approx(v1[0]) and cl.velocity[1].tolist() == pytest.approx(v1[1])
    c0, c1 = [1 + 1 / 3, 2 - 1 / 3], [3.0, -0.5]
    assert cl.centers[0].tolist() == pytest.approx(c0) and cl.centers[1].tolist() == pytest.approx(c1)
    assert cl.centers[2:].tolist() == C[2:] and cl.velocity[2:].abs().sum() == 0  # absent classes stay
    # Step 2, lr 0.25 (a drop), class 1 only: delta_1 = (c1 - (3, 0.5)) / 2 = (0, -0.5).
    cl.update(torch.tensor([[3.0, 0.5]]), torch.tensor([1]), alpha=0.123, lr=0.25, momentum=0.9)
    v2_0 = [0.9 * v for v in v1[0]]  # no batch sample: momentum alone moves it on, as in Caffe
    v2_1 = [0.0, 0.9 * -0.5 + 0.25 * -0.5]
    assert cl.velocity[0].tolist() == pytest.approx(v2_0) and cl.velocity[1].tolist() == pytest.approx(v2_1)
    assert cl.centers[0].tolist() == pytest.approx([c0[0] - v2_0[0], c0[1] - v2_0[1]])
    assert cl.centers[1].tolist() == pytest.approx([3.0, -0.5 - v2_1[1]])


def test_caffe_update_uses_the_network_lr_of_each_step():
    state = new_state(TrainConfig(center_update="caffe", lr=0.05), n_train=16)
    before = state.center_loss.centers.clone()
    x, y = _batch()
    with torch.no_grad():
        features, _ = state.model(x)
    delta = center_delta(before, features, y, "caffe")
    train_step(state, x, y)
    assert torch.allclose(state.center_loss.velocity, 0.05 * delta, atol=1e-6)
    assert "velocity" in state.center_loss.state_dict()
    # The other rules keep no history: their checkpoints hold the centers alone, as those of earlier versions.
    assert list(CenterLoss(rule="paper").state_dict()) == ["centers"] and CenterLoss().velocity is None


def test_label_smoothing_is_the_softmax_loss_the_step_trains_on():
    x, y = _batch()
    state = new_state(TrainConfig(label_smoothing=0.1), n_train=16)
    with torch.no_grad():
        _, logits = state.model(x)
    expected = F.cross_entropy(logits, y, label_smoothing=0.1)
    softmax_loss, _ = train_step(state, x, y)
    assert softmax_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert abs(softmax_loss.item() - F.cross_entropy(logits, y).item()) > 1e-3
    assert TrainConfig(label_smoothing=0.1).run_name.endswith("_ls0.1")


def test_uint8_labels_are_class_indices_and_an_empty_batch_moves_no_center():
    """uint8 labels were read as a boolean mask (a wrong loss, silently); rule "sgd" on an empty batch turned
    every center into NaN."""
    g = torch.Generator().manual_seed(0)
    feats, labels = torch.randn(10, 2, generator=g), torch.tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 1])
    for rule in ("paper", "sgd", "caffe"):
        as_long, as_uint8 = CenterLoss(10, 2, rule=rule), CenterLoss(10, 2, rule=rule)
        as_uint8.load_state_dict(as_long.state_dict())
        assert as_uint8(feats, labels.to(torch.uint8)).item() == as_long(feats, labels).item()
        as_long.update(feats, labels, alpha=0.5, lr=0.1)
        as_uint8.update(feats, labels.to(torch.uint8), alpha=0.5, lr=0.1)
        assert torch.equal(as_uint8.centers, as_long.centers), rule
        before = as_long.centers.clone()
        as_long.update(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long), alpha=0.5, lr=0.1)
        assert torch.equal(as_long.centers, before), rule
        assert as_long(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)).item() == 0.0
