"""Wall time of a K-run lambda sweep against K times one run, sequential, in parallel jobs, and batched.

    python bench/sweep.py [--device cpu|cuda] [--k 5] [--train-limit N] [--epochs 1] [--modes seq,jobs,batched]
                          [--config fast] [--precision bf16]
"""
from __future__ import annotations

import argparse
import tempfile
import time

import torch
from table import print_table  # bench/table.py: python bench/X.py puts bench/ on the path

from centerloss_cli.engine.training import train
from centerloss_cli.launch.sweep import run_sweep
from centerloss_cli.settings.config import resolve_config
from centerloss_cli.settings.devices import resolve_device

LAMBDAS = [0.0, 0.0001, 0.001, 0.01, 0.1, 1.0, 0.003, 0.03]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--train-limit", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--modes", default="seq,jobs,batched", help="comma-separated: seq, jobs, batched")
    ap.add_argument("--config", default=None, help="a config file or built-in config (default: the paper's settings)")
    ap.add_argument("--precision", default=None, help="fp32, bf16, ... (default: the config's)")
    args = ap.parse_args()

    device = resolve_device(args.device)
    settings = {"device": str(device), "train_limit": args.train_limit, "epochs": args.epochs,
                "test_limit": args.train_limit // 5, "plot_train_samples": args.train_limit // 5}
    if args.data_dir:
        settings["data_dir"] = args.data_dir
    if args.precision:
        settings["precision"] = args.precision
    lambdas = LAMBDAS[: args.k]
    precision = args.precision or "the config's"
    print(f"config {args.config or 'defaults'}, precision {precision}, "
          f"device {device}, {torch.get_num_threads()} threads, K = {args.k} runs, {args.train_limit} training "
          f"images, {args.epochs} epoch(s)", flush=True)

    timings = {}
    with tempfile.TemporaryDirectory() as out:
        base = resolve_config(args.config, {**settings, "output_dir": f"{out}/one"})
        t = time.perf_counter()
        train(base.with_(lam=0.01), progress=False)
        timings["one run"] = time.perf_counter() - t
        for mode in args.modes.split(","):
            cfg = base.with_(output_dir=f"{out}/{mode}")
            t = time.perf_counter()
            run_sweep(cfg, lambdas, [0.5], jobs=2 if mode == "jobs" else 1, batched=mode == "batched", progress=False)
            timings[f"sweep, {mode}"] = time.perf_counter() - t

    one = timings["one run"]
    print()
    print_table(("what", "seconds", "/ one run", "/ (K x one run)"),
                ((name, f"{secs:.1f}", f"{secs / one:.2f}", f"{secs / (args.k * one):.2f}")
                 for name, secs in timings.items()))


if __name__ == "__main__":
    main()
