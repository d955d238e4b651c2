import torch
from torch import nn

from centerloss_cli.core.model import LeNetPP


def test_shapes_and_feature_dimension():
    features, logits = LeNetPP()(torch.zeros(5, 1, 28, 28))
    assert features.shape == (5, 2)
    assert logits.shape == (5, 10)


def test_body_reduces_to_1152_values():
    assert LeNetPP().body(torch.zeros(1, 1, 28, 28)).shape == (1, 128 * 3 * 3)


def test_classifier_bias_is_off_by_default_and_can_be_turned_on():
    assert LeNetPP().classifier.bias is None
    assert LeNetPP(classifier_bias=True).classifier.bias is not None


def test_prelu_after_every_conv_and_the_feature_layer():
    model = LeNetPP()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    prelus = [m for m in model.modules() if isinstance(m, nn.PReLU)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64, 128, 128]
    assert all(c.kernel_size == (5, 5) and c.padding == (2, 2) for c in convs)
    assert len(prelus) == len(convs) + 1
    assert isinstance(model.feature[-1], nn.PReLU)


def test_features_are_post_prelu():
    model = LeNetPP()
    with torch.no_grad():
        model.feature[-1].weight.fill_(0.0)  # PReLU with slope 0 is ReLU: no negative feature survives
        features, _ = model(torch.randn(64, 1, 28, 28))
    assert (features >= 0).all()


def test_weights_use_caffes_xavier_fan_in_bound():
    model = LeNetPP()
    first, classifier = model.body[0].weight, model.classifier.weight
    assert first.abs().max() <= (3 / 25) ** 0.5 and first.abs().max() > 0.9 * (3 / 25) ** 0.5
    assert classifier.abs().max() <= (3 / 2) ** 0.5 and classifier.abs().max() > 0.5


def _conv3_positions_reached(net: str) -> torch.Tensor:
    """Which of the 7x7 positions of conv3's output map the feature layer's gradient reaches, over a batch."""
    torch.manual_seed(0)
    model = LeNetPP(net=net)
    conv3 = model.body[12]  # the PReLU after the last conv: the map that pool3 reads
    seen = []

    def keep(module, inputs, out):
        out.retain_grad()
        seen.append(out)

    conv3.register_forward_hook(keep)
    features, _ = model(torch.randn(32, 1, 28, 28))
    features.sum().backward()
    (out,) = seen
    assert out.shape[-2:] == (7, 7)
    return out.grad.abs().sum((0, 1)) > 0


def test_the_official_pool3_lets_every_conv3_position_reach_the_features():
    assert _conv3_positions_reached("official").all()
    # Table 1's 2x2 pool never reads row and column 6: 13 of the 49 positions.
    table1 = _conv3_positions_reached("table1")
    assert table1[:6, :6].all() and not table1[6].any() and not table1[:, 6].any()
    assert int((~table1).sum()) == 13


def test_both_nets_reduce_to_the_same_3x3():
    for net in ("official", "table1"):
        assert LeNetPP(net=net).body(torch.zeros(1, 1, 28, 28)).shape == (1, 128 * 3 * 3)
