"""Stop signals, in one place: what they ask for (an explicit state machine), and how they are caught,
held back while child processes start, and passed on.

    RUNNING ──any stop signal──▶ STOP_AFTER_BATCH ──a second Ctrl-C──▶ STOP_NOW
                                        │                    (KeyboardInterrupt where the code stands)
                                        └─ a second Ctrl-C while a file is being written: ignored,
                                           the write ends first; other repeats change nothing

The epoch loop reads `requested` at batch boundaries, so a first signal stops cleanly: the batch ends,
a checkpoint is saved, and the loop raises Interrupted. The controller is an object that whoever
runs a training owns (runtime.Runtime) and passes down; nothing here is module state.
"""
from __future__ import annotations

import enum
import os
import signal
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

# Ctrl-C, `kill` (and Slurm before it kills a job), a closed terminal, and SIGUSR2, which Slurm sends
# ahead of a job's time limit when asked to (submitit asks: --signal=USR2@90).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)


class State(enum.Enum):
    RUNNING = "running"
    STOP_AFTER_BATCH = "stop after this batch"
    STOP_NOW = "stop now"


class StopController:
    """Which stop was asked for. `handle(signum)` is the signal handler's whole work, and can be called
    directly (tests, a watchdog); listeners hear the first signal (a sweep passes it on to its workers)."""

    def __init__(self) -> None:
        self.state = State.RUNNING
        self.signum = 0  # the first stop signal; 0 while running
        self._writing = 0  # > 0 while files are written: a second Ctrl-C then waits for the write to end
        self._listeners: list[Callable[[int], None]] = []

    @property
    def requested(self) -> bool:
        return self.state is not State.RUNNING

    def handle(self, signum: int) -> None:
        if self.state is State.RUNNING:
            self.state, self.signum = State.STOP_AFTER_BATCH, signum
            for listener in list(self._listeners):
                listener(signum)
        elif signum == signal.SIGINT == self.signum and not self._writing:
            self.state = State.STOP_NOW
            raise KeyboardInterrupt  # a second Ctrl-C: stop where the code stands (the loop saves what it can)

    def on_stop(self, listener: Callable[[int], None]) -> Callable[[], None]:
        """Call `listener(signum)` on the first stop; returns the function that removes it."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Files are being written: a second Ctrl-C waits for them instead of cutting them short."""
        self._writing += 1
        try:
            yield
        finally:
            self._writing -= 1

    @contextmanager
    def installed(self) -> Iterator["StopController"]:
        """Route STOP_SIGNALS to `handle` while the block runs, then put the previous handlers back.
        Outside the main thread Python cannot set handlers: stops then come only through `handle`."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        # A SIGHUP the process was started ignoring stays ignored: `nohup centerloss train ... &` must
        # outlive the terminal, as nohup promised. (Not SIGINT: a shell starts background jobs ignoring it,
        # and a stop asked for by SIGINT, from a sweep or a test, must still be heard.)
        routed = [s for s in STOP_SIGNALS if s != signal.SIGHUP or signal.getsignal(s) is not signal.SIG_IGN]
        previous = {s: signal.signal(s, lambda signum, frame: self.handle(signum)) for s in routed}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def describe(signum: int) -> str:
    return "interrupted" if signum == signal.SIGINT else f"stopped by {signal.Signals(signum).name}"


@contextmanager
def blocked() -> Iterator[None]:
    """Hold STOP_SIGNALS back in this thread while it starts child processes. A child inherits the block
    (across exec too), so a Ctrl-C to the process group cannot kill it half-started; it unblocks them
    once its handlers are set (a sweep worker), or keeps them blocked for good (a plotting process,
    whose parent handles the stop and then closes it). Here a signal that arrives meanwhile is
    delivered when the block ends, not lost."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def unblock() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def stop_when_orphaned(parent: int, interval: float = 0.5) -> threading.Thread:
    """In a child process: send ourselves SIGTERM once `parent` is gone (killed with -9, say), so that
    the stop handling saves and exits as for any stop, instead of training on as an orphan."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
