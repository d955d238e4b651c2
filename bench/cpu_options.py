"""Median time of one training step (fwd + bwd + SGD + center update) under CPU options worth trying.

    python bench/cpu_options.py [--repeat 20] [--batch-size 128]

Options: the default, channels_last memory format, torch.compile, and 1 vs all threads.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from table import print_table  # bench/table.py: python bench/X.py puts bench/ on the path

from centerloss_cli.core.state import new_state
from centerloss_cli.core.step import train_step
from centerloss_cli.settings.config import TrainConfig


def time_steps(state, x, y, repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        train_step(state, x, y)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        train_step(state, x, y)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (args.batch_size,), generator=g)
    threads = torch.get_num_threads()
    results = {}

    state = new_state(TrainConfig(), n_train=60000)
    results[f"default ({threads} threads)"] = time_steps(state, x, y, args.repeat)

    state = new_state(TrainConfig(), n_train=60000)
    state.model.to(memory_format=torch.channels_last)
    results["channels_last"] = time_steps(state, x.to(memory_format=torch.channels_last), y, args.repeat)

    state = new_state(TrainConfig(), n_train=60000)
    compiled = torch.compile(state.model)
    state.model = compiled
    t = time.perf_counter()
    train_step(state, x, y)
    compile_s = time.perf_counter() - t
    results[f"torch.compile (first step {compile_s:.0f} s)"] = time_steps(state, x, y, args.repeat)

    torch.set_num_threads(1)
    state = new_state(TrainConfig(), n_train=60000)
    results["1 thread"] = time_steps(state, x, y, args.repeat)
    torch.set_num_threads(threads)

    base = results[f"default ({threads} threads)"]
    print(f"batch {args.batch_size}, median of {args.repeat} steps, torch {torch.__version__}")
    print_table(("option", "ms / step", "images/s", "vs default"),
                ((name, f"{1000 * secs:.0f}", f"{args.batch_size / secs:.0f}", f"{base / secs:.2f}x")
                 for name, secs in results.items()))


if __name__ == "__main__":
    main()
