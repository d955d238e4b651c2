"""Run the centerloss CLI with a fault injected at an exact point (used by test_reliability.py).

    python fault_driver.py step N ACTION -- CLI ARGS...      after the N-th training step
    python fault_driver.py write NAME N ACTION -- CLI ARGS... half-way through the N-th write of a file
                                                              whose name contains NAME
ACTION is kill (SIGKILL: no cleanup of any kind) or sigint (as Ctrl-C).
"""
import os
import signal
import sys

from centerloss_cli import storage, train
from centerloss_cli.cli import main

split = sys.argv.index("--")
spec, cli_args = sys.argv[1:split], sys.argv[split + 1 :]
action = spec[-1]
count = [0]


def fire() -> None:
    os.kill(os.getpid(), signal.SIGKILL if action == "kill" else signal.SIGINT)


if spec[0] == "step":
    n, real_step = int(spec[1]), train.train_step

    def step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        count[0] += 1
        if count[0] == n:
            fire()
        return out

    train.train_step = step
else:
    name, n, real_open = spec[1], int(spec[2]), open

    class HalfWritten:
        """A file whose first write stops half-way, at which point the process dies."""

        def __init__(self, f):
            self._f = f

        def write(self, data):
            self._f.write(data[: max(1, len(data) // 2)])
            self._f.flush()
            os.fsync(self._f.fileno())
            fire()
            return len(data)

        def __getattr__(self, attr):
            return getattr(self._f, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    def faulty_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode and name in os.path.basename(str(path)):
            count[0] += 1
            if count[0] == n:
                return HalfWritten(f)
        return f

    storage.open = faulty_open

sys.argv = ["centerloss", *cli_args]
main()
