"""Every error the CLI turns into a one-line message, each with its exit code.

A CenterLossError is a problem the user can fix or must know about; anything else is a bug and keeps
its traceback. This module imports nothing heavy, so any module (the torch-free config included) can use it.
"""
import signal


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
