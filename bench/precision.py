"""fp32 against bf16 autocast on this CPU: one training step and one evaluation forward, interleaved.

    python bench/precision.py [--repeat 25] [--batch-size 128]

Each round times one fp32 step, then one bf16 step (and the same for a 1,000-image evaluation forward),
so that the machine's drift over minutes falls on both alike. It names the CPU and what --precision auto
takes on it: bf16 autocast is fast only where the CPU computes bf16 natively (AVX512_BF16 or AMX);
elsewhere torch emulates it.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from table import print_table  # bench/table.py: python bench/X.py puts bench/ on the path

from centerloss_cli.core.precision import autocast
from centerloss_cli.core.state import new_state
from centerloss_cli.core.step import train_step
from centerloss_cli.rundir.records import cpu_model
from centerloss_cli.settings.config import TrainConfig
from centerloss_cli.settings.devices import resolve_precision

PRECISIONS = ("fp32", "bf16")


def timed(fn, *args) -> float:
    t = time.perf_counter()
    fn(*args)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=25)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, 1, 28, 28, generator=g).to(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch_size,), generator=g)
    evaluated = torch.randn(1000, 1, 28, 28, generator=g).to(memory_format=torch.channels_last)
    states = {p: new_state(TrainConfig(precision=p), n_train=60000, device=cpu) for p in PRECISIONS}

    def step(p: str) -> None:
        train_step(states[p], x, y)

    def forward(p: str) -> None:
        with torch.no_grad(), autocast(p, cpu):
            states[p].model(evaluated)

    for p in PRECISIONS:  # warm-up: the first calls pick kernels and allocate
        for _ in range(3):
            step(p)
            forward(p)
    times: dict[tuple[str, str], list[float]] = {(w, p): [] for w in ("step", "forward") for p in PRECISIONS}
    for _ in range(args.repeat):
        for p in PRECISIONS:
            times["step", p].append(timed(step, p))
        for p in PRECISIONS:
            times["forward", p].append(timed(forward, p))

    print(f"CPU: {cpu_model()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"--precision auto takes {resolve_precision('auto', cpu)} here")
    print(f"median of {args.repeat} interleaved rounds; batch {args.batch_size}, evaluation forward of 1,000 images")
    rows = []
    for what, label in (("step", f"training step (batch {args.batch_size})"), ("forward", "evaluation forward")):
        fp32, bf16 = (1000 * statistics.median(times[what, p]) for p in PRECISIONS)
        rows.append((label, f"{fp32:.0f}", f"{bf16:.0f}", f"{fp32 / bf16:.2f}x"))
    print_table(("what", "fp32 ms", "bf16 ms", "fp32 / bf16"), rows)


if __name__ == "__main__":
    main()
