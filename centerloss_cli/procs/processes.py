"""Child processes that start through their own entry point, `python -m centerloss_cli.child ROLE`, and
talk to their parent over a pair of pipes.

Never by multiprocessing's spawn, which re-imports the caller's __main__ in the child: a user's script
without an `if __name__ == "__main__":` guard would train again there. No multiprocessing resource
tracker either, which a stop signal to the process group used to kill with tracebacks. A child starts
with the stop signals blocked (stop.blocked), and learns of its parent's end by the end of its pipe.
"""
from __future__ import annotations

import os
import subprocess
import sys
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Sequence

from ..errors import CenterLossError, ChildFailed
from . import stop

PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # where `import centerloss_cli` finds this copy


class Channel:
    """Two pipes: pickled messages out on one, in on the other."""

    def __init__(self, read_fd: int, write_fd: int):
        self.inbox = Connection(read_fd, writable=False)
        self.outbox = Connection(write_fd, readable=False)

    def send(self, message: Any) -> None:
        self.outbox.send(message)

    def recv(self) -> Any:
        """The next message; EOFError once the other side has closed its end or died."""
        return self.inbox.recv()

    def close(self) -> None:
        self.outbox.close()
        self.inbox.close()


@dataclass
class Failure:
    """An exception as it crosses a pipe: our own errors whole, anything else as its traceback's text."""

    error: CenterLossError | None
    text: str

    @staticmethod
    def of(e: BaseException) -> "Failure":
        if isinstance(e, CenterLossError):
            return Failure(e, str(e))
        return Failure(None, "".join(traceback.format_exception(type(e), e, e.__traceback__)).rstrip())


class Child:
    """A child process of one role (see child.py), with its channel. `close` ends its input: the child
    finishes what it was sent and exits."""

    def __init__(self, role: str, *args: str):
        to_child, from_parent = os.pipe()
        to_parent, from_child = os.pipe()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT),
                                                                          os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "centerloss_cli.child", role, str(to_child), str(from_child), str(os.getpid()),
                   *args]
        try:
            with stop.blocked():  # the child starts with them blocked: a Ctrl-C cannot kill it half-started
                self.process = subprocess.Popen(command, pass_fds=(to_child, from_child), env=env)
        finally:
            os.close(to_child)
            os.close(from_child)
        self.role = role
        self.channel = Channel(to_parent, from_parent)

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, message: Any) -> None:
        try:
            self.channel.send(message)
        except OSError:  # BrokenPipeError: it died; recv says how
            pass

    def recv(self) -> Any:
        try:
            return self.channel.recv()
        except (EOFError, OSError):
            code = self.process.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise ChildFailed(f"the {self.role} process (pid {self.pid}) died ({how})") from None

    def ready(self) -> bool:
        """Whether a message (or the child's end) is waiting."""
        return self.channel.inbox.poll(0)

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            try:
                self.process.send_signal(signum)
            except ProcessLookupError:
                pass

    def close(self, timeout: float = 60.0) -> None:
        """End its input and wait for it to exit; kill it if it will not."""
        self.channel.outbox.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.channel.inbox.close()


def ready(children: Sequence[Child], timeout: float | None = None) -> list[Child]:
    """The children with a message (or their end) waiting, after at most `timeout` seconds."""
    by_inbox = {c.channel.inbox: c for c in children}
    return [by_inbox[conn] for conn in wait(list(by_inbox), timeout)]
