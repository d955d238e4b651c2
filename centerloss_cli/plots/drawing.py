"""A plotting process's whole life (child.py starts it; service.PlotService is the trainer's side): draw what
arrives, in order, and say how each drawing went. The only place that imports matplotlib's figures for the
trainer, so that the trainer never does."""
from __future__ import annotations

import queue
import threading
from typing import Any

from ..procs.processes import Channel, Failure
from .service import CURVES, SAVED_SCATTER, SCATTER


def serve(channel: Channel, parent: int) -> None:
    """A plotting process: draw what arrives, in order, and say how each went. A reader thread keeps the
    pipe drained, so the parent never blocks sending the features of an epoch while one is drawn."""
    jobs: queue.Queue = queue.Queue()

    def read() -> None:
        while True:
            try:
                jobs.put(channel.recv())
            except (EOFError, OSError):
                jobs.put(None)  # the parent closed us, or died: draw what is queued, then leave
                return

    threading.Thread(target=read, name="plot-inbox", daemon=True).start()
    while (job := jobs.get()) is not None:
        drawing, args = job
        try:
            reply: Any = draw(drawing, args)  # None, or a line for the trainer to say
        except BaseException as e:  # reported to the trainer, which decides
            reply = Failure.of(e)
        try:
            channel.send(reply)
        except OSError:
            pass  # the parent is gone; the remaining plots are still worth drawing


def draw(drawing: str, args: tuple) -> str | None:
    """One drawing, in a plotting process: the only place that imports matplotlib's modules. Returns a
    line for the trainer to say (a damaged features file), or None."""
    from . import charts, figures

    if drawing == SCATTER:
        figures.draw_epoch_plots(*args)
    elif drawing == SAVED_SCATTER:
        return figures.draw_saved_epoch(*args)
    elif drawing == CURVES:
        charts.draw_run_curves(*args)
    else:
        raise ValueError(f"no drawing named {drawing!r}")
    return None
