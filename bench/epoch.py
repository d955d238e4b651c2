"""How close one training epoch comes to the hardware's limit, and how a typical re-implementation compares.

    python bench/epoch.py [--device cpu|cuda] [--train-limit N] [--repeat K] [--data-dir DIR] [--no-reference]
                          [--precision fp32|bf16|auto]

(a) compute bound: median time of one pure fwd+bwd+SGD step (with the center update) at the training
    batch size, times the steps of an epoch, plus pure forward passes over the evaluated images.
(b) our epoch: the wall time of a real one-epoch `train()` through the library, with evaluation,
    feature saving, plots and checkpoint, split into its phases.
(c) a reference loop in the style of popular re-implementations: torchvision MNIST with ToTensor and
    Normalize, DataLoader(num_workers=4, shuffle=True), loss.item() every batch, the features of the
    whole training set collected during the epoch and scattered with matplotlib at the end.
"""
from __future__ import annotations

import argparse
import gzip
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from table import print_table  # bench/table.py: python bench/X.py puts bench/ on the path

from centerloss_cli.core import model as core_model
from centerloss_cli.core import state as core_state
from centerloss_cli.core import step as core_step
from centerloss_cli.core.center_loss import CenterLoss
from centerloss_cli.core.model import LeNetPP
from centerloss_cli.dataset.fetch import MNIST_MD5, data_root, ensure_dataset
from centerloss_cli.dataset.loading import load_dataset, num_batches
from centerloss_cli.engine import commit, training
from centerloss_cli.engine.runtime import Runtime
from centerloss_cli.plots.service import PlotService
from centerloss_cli.rundir import files as runfiles
from centerloss_cli.settings.config import resolve_config
from centerloss_cli.settings.devices import resolve_device, resolve_precision


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], repeat: int, device: torch.device, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def compute_bound(config, data, device: torch.device, repeat: int) -> dict[str, float]:
    state = core_state.new_state(config, len(data.train), device)
    x, y = data.train.images[: config.batch_size], data.train.labels[: config.batch_size]
    step = median_time(lambda: core_step.train_step(state, x, y), repeat, device)
    n_eval = len(data.test) + min(config.plot_train_samples, len(data.train))
    xe = data.test.images[: core_model.EVAL_BATCH]
    fwd = median_time(lambda: core_model.extract(state.model, xe, precision=config.precision), max(1, repeat // 2),
                      device)
    steps = num_batches(len(data.train), config.batch_size)
    return {"train": step * steps, "eval": fwd * n_eval / len(xe), "step_ms": 1000 * step}


@contextmanager
def timed(phases: dict[str, float], owner: object, name: str, label: str) -> Iterator[None]:
    """Wrap owner.name so the time spent in it is added to phases[label]."""
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            phases[label] = phases.get(label, 0.0) + time.perf_counter() - t

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        setattr(owner, name, real)


def our_epoch(config, device: torch.device) -> dict[str, float]:
    phases: dict[str, float] = {}
    rt = Runtime()
    with tempfile.TemporaryDirectory() as out, \
            timed(phases, training, "load_dataset", "load data"), \
            timed(phases, commit, "evaluate", "evaluate"), \
            timed(phases, runfiles, "save_features", "save features"), \
            timed(phases, PlotService, "submit_epoch", "plots queued"), \
            timed(phases, PlotService, "wait", "waiting for plots"), \
            timed(phases, commit, "save_checkpoint", "checkpoint"), \
            timed(phases, runfiles, "write_metrics", "metrics.csv"):
        t = time.perf_counter()
        training.train(config.with_(output_dir=out, epochs=1), runtime=rt, progress=False)
        total = time.perf_counter() - t
    rt.close()
    phases["train loop"] = total - sum(phases.values())
    phases["total"] = total - phases.pop("load data")  # the data is loaded before the clock, as the reference's is
    return phases


def raw_mnist_for_torchvision(root: Path, dest: Path) -> Path:
    """torchvision's MNIST wants the uncompressed files in ROOT/MNIST/raw."""
    files, _ = ensure_dataset(root)
    raw = dest / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in MNIST_MD5:
        src = files[name]
        with (gzip.open(src) if src.suffix == ".gz" else open(src, "rb")) as f, open(raw / name, "wb") as out:
            shutil.copyfileobj(f, out)
    return dest


def reference_epoch(config, root: Path, device: torch.device, train_limit: int | None) -> float:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    with tempfile.TemporaryDirectory() as tmp:
        tv_root = raw_mnist_for_torchvision(root, Path(tmp))
        t0 = time.perf_counter()
        tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
        dataset = datasets.MNIST(str(tv_root), train=True, download=False, transform=tf)
        if train_limit:
            dataset = Subset(dataset, range(train_limit))
        loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=4)
        torch.manual_seed(0)
        model = LeNetPP().to(device)
        centers = CenterLoss().to(device)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        all_feats, all_labels = [], []
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            feats, logits = model(x)
            loss = F.cross_entropy(logits, y) + config.lam * centers(feats, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            centers.update(feats.detach(), y, config.alpha)
            print(f"\rloss {loss.item():.4f}", end="", file=sys.stderr)
            all_feats.append(feats.data.cpu().numpy())
            all_labels.append(y.cpu().numpy())
        import numpy as np

        f, lab = np.concatenate(all_feats), np.concatenate(all_labels)
        fig = plt.figure(figsize=(6, 6))
        for d in range(10):
            plt.scatter(f[lab == d, 0], f[lab == d, 1], s=1)
        plt.savefig(Path(tmp) / "epoch.png")
        plt.close(fig)
        print(file=sys.stderr)
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--train-limit", type=int, default=None)
    ap.add_argument("--repeat", type=int, default=20, help="timed steps for the compute bound")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--no-reference", action="store_true", help="skip (c)")
    ap.add_argument("--precision", default="fp32", help="fp32, tf32, bf16 or auto (resolved for the device)")
    args = ap.parse_args()

    device = resolve_device(args.device)
    overrides = {"device": str(device), "train_limit": args.train_limit, "data_dir": args.data_dir,
                 "precision": resolve_precision(args.precision, device)}
    config = resolve_config(None, {k: v for k, v in overrides.items() if v is not None})
    data = load_dataset(config.data_dir, device, config.train_limit, config.test_limit)
    n_train, n_eval = len(data.train), len(data.test) + min(config.plot_train_samples, len(data.train))
    print(f"device {device} ({torch.get_num_threads()} threads), precision {config.precision}, "
          f"{n_train} training images, "
          f"{n_eval} evaluated images, batch {config.batch_size}, torch {torch.__version__}", flush=True)

    # The machine's speed drifts over minutes (other tenants, clocks), so (a) is measured before and
    # after (b), and their mean is the bound.
    a_before = compute_bound(config, data, device, args.repeat)
    b = our_epoch(config, device)
    a_after = compute_bound(config, data, device, args.repeat)
    a = {k: (a_before[k] + a_after[k]) / 2 for k in a_before}
    c = None if args.no_reference else reference_epoch(config, data_root(args.data_dir), device, args.train_limit)

    a_total = a["train"] + a["eval"]
    rows = [
        ("(a) compute bound", a_total, f"step {a['step_ms']:.1f} ms x {num_batches(n_train, config.batch_size)} "
                                       f"= {a['train']:.1f} s, eval forward {a['eval']:.1f} s (mean of "
                                       f"{a_before['train'] + a_before['eval']:.1f} s before and "
                                       f"{a_after['train'] + a_after['eval']:.1f} s after (b))"),
        ("(b) our epoch", b["total"], ", ".join(f"{k} {v:.2f} s" for k, v in b.items() if k != "total")),
    ]
    if c is not None:
        rows.append(("(c) reference loop", c, "torchvision MNIST + DataLoader(num_workers=4), loss.item() per batch"))
    print()
    print_table(("measure", "seconds", "train images/s", "detail"),
                ((name, f"{secs:.1f}", f"{n_train / secs:.0f}", detail) for name, secs, detail in rows))
    print()
    print(f"(b)/(a) = {b['total'] / a_total:.3f}")
    if c is not None:
        print(f"(c)/(b) = {c / b['total']:.3f}")


if __name__ == "__main__":
    main()
