"""One rank of a two-process DistributedDataParallel training with CenterLoss (test_center_loss_ddp.py).

    python ddp_worker.py RANK WORLD_SIZE PORT OUT

Each rank trains a small model on its half of every global batch, with gloo on the CPU, and saves its
centers (moved by CenterLoss.update, which all-reduces) and, beside them, the centers a per-rank update
without the all-reduce would have given (what every re-implementation does): OUT.rankN.pt.
"""
import os
import sys

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from centerloss_cli.core.center_loss import CenterLoss, move_centers

STEPS, GLOBAL_BATCH, CLASSES, DIM = 4, 16, 5, 3


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.features = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.PReLU(), torch.nn.Linear(16, DIM))
        self.classifier = torch.nn.Linear(DIM, CLASSES)

    def forward(self, x):
        f = self.features(x)
        return f, self.classifier(f)


def batches():
    """The global batches, the same in every process."""
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(GLOBAL_BATCH, 8, generator=g), torch.randint(0, CLASSES, (GLOBAL_BATCH,), generator=g))
            for _ in range(STEPS)]


def train(model, center_loss, data, per_rank=None):
    """The same loop for one process on whole batches and for a rank on its part of them."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for x, y in data:
        features, logits = model(x)
        loss = F.cross_entropy(logits, y) + 0.1 * center_loss(features, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        center_loss.update(features, y, alpha=0.5)
        if per_rank is not None:  # the update of each rank's own part alone: the centers drift apart
            move_centers(per_rank, None, features.detach(), y, "paper", 0.5)


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model, center_loss = Net(), CenterLoss(CLASSES, DIM)
    per_rank = center_loss.centers.clone()
    part = GLOBAL_BATCH // world
    mine = [(x[rank * part:(rank + 1) * part], y[rank * part:(rank + 1) * part]) for x, y in batches()]
    train(DistributedDataParallel(model), center_loss, mine, per_rank)
    torch.save({"centers": center_loss.centers, "per_rank": per_rank,
                "weight": model.classifier.weight.detach()}, f"{out}.rank{rank}.pt")
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
