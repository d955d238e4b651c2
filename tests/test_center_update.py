"""Properties of the paper's center update (Eq. 4), over random batches: what a step of the centers must do
whatever the features, labels and alpha."""
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from centerloss_cli.core.center_loss import CenterLoss

batches_ = st.integers(1, 40).flatmap(lambda m: st.tuples(
    st.lists(st.floats(-50, 50, width=32), min_size=2 * m, max_size=2 * m),
    st.lists(st.integers(0, 5), min_size=m, max_size=m),
))


def _apply(centers, feats, labels, alpha):
    cl = CenterLoss(num_classes=6, feat_dim=2)
    cl.centers.copy_(centers)
    cl.update(feats, labels, alpha)
    return cl.centers


@settings(max_examples=60, deadline=None)
@given(batch=batches_, alpha=st.floats(0, 1))
def test_absent_classes_never_move(batch, alpha):
    values, labels = batch
    feats, y = torch.tensor(values).reshape(-1, 2), torch.tensor(labels)
    centers = torch.randn(6, 2)
    after = _apply(centers, feats, y, alpha)
    for j in range(6):
        if j not in labels:
            assert torch.equal(after[j], centers[j])


@settings(max_examples=40, deadline=None)
@given(batch=batches_)
def test_alpha_zero_freezes_every_center(batch):
    values, labels = batch
    centers = torch.randn(6, 2)
    assert torch.equal(_apply(centers, torch.tensor(values).reshape(-1, 2), torch.tensor(labels), 0.0), centers)


@settings(max_examples=40, deadline=None)
@given(x=st.tuples(st.floats(-50, 50, width=32), st.floats(-50, 50, width=32)), label=st.integers(0, 5))
def test_alpha_one_with_one_sample_moves_halfway(x, label):
    centers = torch.randn(6, 2)
    sample = torch.tensor([x])
    after = _apply(centers, sample, torch.tensor([label]), 1.0)
    assert torch.allclose(after[label], (centers[label] + sample[0]) / 2, atol=1e-5)


@settings(max_examples=40, deadline=None)
@given(batch=batches_, alpha=st.floats(0, 1), seed=st.integers(0, 1000))
def test_the_update_does_not_depend_on_batch_order(batch, alpha, seed):
    values, labels = batch
    feats, y = torch.tensor(values).reshape(-1, 2), torch.tensor(labels)
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    centers = torch.randn(6, 2)
    assert torch.allclose(_apply(centers, feats, y, alpha), _apply(centers, feats[perm], y[perm], alpha), atol=1e-4)


