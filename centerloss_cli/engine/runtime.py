"""What one entry point owns while it trains, made by that entry point and passed down: the stop signals,
the plotting processes, and its voice (every line a user reads goes through `Runtime.say`).

Entry points are a CLI command, a sweep worker, a Slurm job, or a Python caller of `train`. Nothing of
this is module state: two runtimes in one process (a notebook's, a test's) share nothing.

    with Runtime() as rt:            # stop signals caught from here on
        training.train(config, runtime=rt)
    rt.close()                       # the plotting processes end
"""
from __future__ import annotations

import errno
import os
import sys
from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Iterator

from tqdm import tqdm

from ..errors import PlotError
from ..plots.service import PLOT_STALL_S, PlotService
from ..procs.stop import StopController
from ..settings.voice import Voice

STOPPED_PLOT_WAIT_S = 20.0  # an epoch's plots take a few seconds; a stop waits this long for them at most


def _print(message: str) -> None:
    """A line on stdout, above any progress bar (which tqdm draws on stderr). A process started with its
    stdout closed (`cmd >&-`, as a daemon leaves it) has none: that is an OSError like a closed pipe's."""
    if sys.stdout is None:
        raise OSError(errno.EBADF, "stdout is closed")
    tqdm.write(message, file=sys.stdout)
    sys.stdout.flush()


def _silence_stdout() -> None:
    """Send what is still to be printed to /dev/null: a closed pipe or a full device then costs nothing
    more, at exit either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # no stdout, or one without a descriptor (a test's capture)
        pass


class Runtime:
    """The stop controller, the plotting processes and the voice of one entry point. Entering it installs the
    stop-signal handlers (nested entries share them); leaving it waits for the plots of finished epochs.
    `close` ends the plotting processes."""

    def __init__(self, *, voice: Voice = Voice(), say: Callable[[str], None] = _print, plot_processes: int = 1):
        self.voice = voice
        self._say = say  # where the lines for the user go: epochs, notes (a resume that starts a run, say)
        self._mute = False
        self.stop = StopController()
        self.plots = PlotService(plot_processes, say=self.say, patience=self._plot_patience)
        self._depth = 0
        self._signals: ExitStack | None = None

    def say(self, message: str) -> None:
        """Every line the user reads while runs train goes through here. Output is a courtesy and the run
        is the product: a closed pipe (`| head`) or a full device (`> /dev/full`) ends the printing, saying
        so once on stderr, and never the run."""
        if self._mute:
            return
        try:
            self._say(message)
        except OSError as e:
            self._mute = True
            _silence_stdout()
            try:
                if sys.stderr is not None:
                    print(f"centerloss: output stopped ({e.strerror or e}); training goes on", file=sys.stderr)
            except OSError:
                pass

    def __enter__(self) -> "Runtime":
        if self._depth == 0:
            self.stop = StopController()  # each entry point's use starts afresh (a runtime shared by tests, say)
            self._signals = ExitStack()
            self._signals.enter_context(self.stop.installed())
        self._depth += 1
        return self

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: Any) -> None:
        self._depth -= 1
        if self._depth:
            return
        try:
            # The plots of finished epochs still get written, stopped or not; after a stop, a plotter that does
            # not finish soon (stopped by kill -STOP, say) must not keep the process from ending.
            self.plots.wait()
        except PlotError:
            if exc_type is None:
                raise  # else the error already on its way out matters more
        finally:
            self._signals.close()

    def close(self) -> None:
        self.plots.close()

    def _plot_patience(self) -> float:
        """How long a plotting process may answer nothing: less once a stop is asked for, which should end soon."""
        return STOPPED_PLOT_WAIT_S if self.stop.requested else PLOT_STALL_S


@contextmanager
def entered(runtime: Runtime | None, sweep: bool = False) -> Iterator[Runtime]:
    """The caller's runtime, entered; or, for a Python caller that gave none, one of its own for this
    call, whose errors name Python arguments, and whose plotting process ends with the call."""
    if runtime is not None:
        with runtime:
            yield runtime
        return
    rt = Runtime(voice=Voice(python=True, sweep=sweep))
    try:
        with rt:
            yield rt
    finally:
        rt.close()


def show_bars(progress: bool) -> bool:
    """Progress bars only on a terminal: in a log file (nohup, a cluster job) they are lines joined by \\r,
    and the one line per epoch says what matters there."""
    return progress and sys.stderr is not None and sys.stderr.isatty()
