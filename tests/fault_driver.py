"""Run the centerloss CLI with a fault injected at an exact point (used by test_reliability.py).

    python fault_driver.py serve                              read requests, one JSON line each
                                                               ({"cwd", "log", "args"}), and run each in a
                                                               fork of this process, which has imported
                                                               torch and the CLI once; answer each with
                                                               {"status": the exit code, or -signal}

    python fault_driver.py step N ACTION -- CLI ARGS...       after the N-th training step
    python fault_driver.py call PATH N ACTION -- CLI ARGS...  after the N-th call of centerloss_cli.PATH
                                                               (e.g. plots.service.PlotService.submit_epoch); N may
                                                               be a list (1,2: after the first two calls)
    python fault_driver.py write NAME N ACTION -- CLI ARGS... half-way through the N-th write of a file
                                                               whose name contains NAME
ACTION is kill (SIGKILL: no cleanup of any kind), sigint (as Ctrl-C) or sigterm (as `kill` or Slurm).
"""
import importlib
import json
import os
import signal
import sys


class HalfWritten:
    """A file whose first write stops half-way, synced, at which point `then()` happens (the process
    dies, or the disk is full)."""

    def __init__(self, f, then):
        self._f, self._then = f, then

    def write(self, data):
        self._f.write(data[: max(1, len(data) // 2)])
        self._f.flush()
        os.fsync(self._f.fileno())
        self._then()
        return len(data)

    def __getattr__(self, attr):
        return getattr(self._f, attr)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._f.__exit__(*exc)


class Fault:
    def __init__(self, action: str):
        self.signal = {"kill": signal.SIGKILL, "sigint": signal.SIGINT, "sigterm": signal.SIGTERM}[action]
        self.count = 0

    def fire(self) -> None:
        os.kill(os.getpid(), self.signal)

    def after_call(self, owner, attr: str, n: set[int]) -> None:
        real = getattr(owner, attr)

        def wrapper(*args, **kwargs):
            out = real(*args, **kwargs)
            self.count += 1
            if self.count in n:
                self.fire()
            return out

        setattr(owner, attr, wrapper)

    def during_write(self, name: str, n: int) -> None:
        from centerloss_cli.rundir import storage

        real_open, fault = storage.open_temp, self

        def faulty_open(path, mode):
            tmp, f = real_open(path, mode)
            if name in os.path.basename(str(path)):
                fault.count += 1
                if fault.count == n:
                    return tmp, HalfWritten(f, fault.fire)
            return tmp, f

        storage.open_temp = faulty_open


def run() -> None:
    from centerloss_cli.cli import main
    from centerloss_cli.engine import loop

    split = sys.argv.index("--")
    spec, cli_args = sys.argv[1:split], sys.argv[split + 1 :]
    fault = Fault(spec[-1])
    if spec[0] == "step":
        fault.after_call(loop, "take_step", {int(spec[1])})  # the loop's step, looked up each epoch
    elif spec[0] == "call":
        *path, attr = spec[1].split(".")
        owner = importlib.import_module("centerloss_cli")
        for part in path:  # modules, then (plots.service.PlotService) a class
            owner = getattr(owner, part) if hasattr(owner, part) else importlib.import_module(
                f"{owner.__name__}.{part}")
        fault.after_call(owner, attr, {int(n) for n in spec[2].split(",")})
    else:
        fault.during_write(spec[1], int(spec[2]))
    sys.argv = ["centerloss", *cli_args]
    main()


def serve() -> None:
    """A fork server: the seconds of importing torch are paid once, not once per fault. The fork happens
    before torch has computed anything, so it has started no threads to lose."""
    import torch

    import centerloss_cli.cli  # noqa: F401
    import centerloss_cli.engine.training  # noqa: F401

    torch.set_num_threads(1)  # as the suite's own trainings: the other core is theirs (see conftest.py)

    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.chdir(request["cwd"])
                log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
                os.dup2(log, 1)
                os.dup2(log, 2)
                sys.argv = ["fault_driver.py", *request["args"]]
                run()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"status": os.waitstatus_to_exitcode(status)}), flush=True)


if __name__ == "__main__":
    serve() if sys.argv[1:] == ["serve"] else run()
