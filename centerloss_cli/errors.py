"""Every error the CLI turns into a one-line message, each with its exit code.

A CenterLossError is a problem the user can fix or must know about; anything else is a bug and keeps
its traceback. This module imports nothing heavy, so any module (the torch-free config included) can use it.
"""
import signal
from contextlib import contextmanager
from typing import Iterator


class CenterLossError(Exception):
    """Bad input, bad data, an occupied run folder: exit code 2."""

    exit_code = 2


class ConfigError(CenterLossError):
    """A setting is unknown, of the wrong type, or out of range."""


class DataError(CenterLossError):
    """The data is missing, corrupt or unreadable."""


class StorageError(CenterLossError):
    """A file could not be written (full disk, no permission); what was there before is intact."""


class PlotError(CenterLossError):
    """The background plotting process failed."""


class Diverged(CenterLossError):
    """A loss became NaN or inf; the run stopped before writing anything of that epoch."""

    exit_code = 1


# The signals that stop a run gracefully: Ctrl-C, `kill` (and Slurm before it kills a job), a closed terminal,
# and SIGUSR2, which Slurm sends ahead of a job's time limit when asked to (submitit asks: --signal=USR2@90).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)


@contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Hold STOP_SIGNALS back in this thread while it starts child processes: a child inherits the block,
    so a Ctrl-C to the process group cannot kill it half-started (with a traceback) before it has set
    its own handlers, and unblocks them (or leaves them blocked, as the plotting process does). Here a
    signal that arrives meanwhile is delivered when the block ends, not lost."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def unblock_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


class Interrupted(CenterLossError):
    """A stop signal: the run stopped at a batch boundary and saved its checkpoint. The exit code is the
    shell's for that signal, 128 + its number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP, 140 for
    SIGUSR2."""

    def __init__(self, message: str, signum: int = 2):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class SweepFailed(CenterLossError):
    """Runs of a sweep failed on the cluster; each is named with its job's log, and a rerun resubmits them."""

    exit_code = 1
