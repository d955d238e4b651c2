"""Every error the CLI turns into a one-line message, each with its exit code.

A CenterLossError is a problem the user can fix or must know about; anything else is a bug and keeps
its traceback. This module imports nothing, so every other module can use it.
"""


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


class ChildFailed(CenterLossError):
    """A process this one started (a plotting process, a sweep worker) died or failed with a bug."""

    exit_code = 1


class Diverged(CenterLossError):
    """A loss became NaN or inf; the run stopped before writing anything of that epoch."""

    exit_code = 1


class SweepFailed(CenterLossError):
    """Runs of a sweep failed on the cluster; each is named with its job's log, and a rerun resubmits them."""

    exit_code = 1


class Interrupted(CenterLossError):
    """A stop signal: the run stopped at a batch boundary and saved its checkpoint. The exit code is the
    shell's for that signal, 128 + its number: 130 for Ctrl-C, 143 for SIGTERM, 129 for SIGHUP, 140 for
    SIGUSR2. `resume` is the call that continues the work, kept apart so that a sweep can say its own."""

    def __init__(self, message: str, signum: int = 2, resume: str = ""):
        super().__init__(f"{message}. Resume with: {resume}" if resume else message)
        self.message, self.signum, self.resume = message, signum, resume
        self.exit_code = 128 + signum

    def __reduce__(self):  # survives the pipe from a sweep worker with its signal
        return (type(self), (self.message, self.signum, self.resume))
