"""The stop controller as a state machine, and the signal plumbing around it; no training."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from centerloss_cli.procs import stop
from centerloss_cli.procs.stop import State, StopController


def test_a_first_signal_asks_to_stop_after_the_batch_and_is_heard_once():
    c = StopController()
    heard = []
    c.on_stop(heard.append)
    assert c.state is State.RUNNING and not c.requested
    c.handle(signal.SIGTERM)
    assert (c.state, c.signum, heard) == (State.STOP_AFTER_BATCH, signal.SIGTERM, [signal.SIGTERM])
    c.handle(signal.SIGTERM)
    c.handle(signal.SIGINT)  # a Ctrl-C after a SIGTERM is a repeat, not a second Ctrl-C
    assert (c.state, c.signum, heard) == (State.STOP_AFTER_BATCH, signal.SIGTERM, [signal.SIGTERM])


def test_a_second_ctrl_c_stops_now_except_while_a_file_is_written():
    c = StopController()
    c.handle(signal.SIGINT)
    with c.writing():
        c.handle(signal.SIGINT)  # waits for the write: nothing happens
        assert c.state is State.STOP_AFTER_BATCH
    with pytest.raises(KeyboardInterrupt):
        c.handle(signal.SIGINT)
    assert c.state is State.STOP_NOW


def test_a_listener_can_be_removed():
    c = StopController()
    heard = []
    remove = c.on_stop(heard.append)
    remove()
    c.handle(signal.SIGHUP)
    assert heard == [] and c.signum == signal.SIGHUP


@pytest.mark.parametrize("sig", stop.STOP_SIGNALS[1:])  # SIGINT is the same path, and pytest's own
def test_installed_routes_every_stop_signal_and_puts_the_handlers_back(sig):
    c = StopController()
    launched = signal.signal(sig, signal.SIG_DFL)  # as a terminal starts it: not under nohup (tested below)
    try:
        with c.installed():
            os.kill(os.getpid(), sig)
            assert c.requested and c.signum == sig
        assert signal.getsignal(sig) == signal.SIG_DFL
    finally:
        signal.signal(sig, launched)


def test_a_signal_the_process_was_started_ignoring_stays_ignored():
    """`nohup centerloss train ... &`, then the terminal's SIGHUP: the run stopped (exit 129)."""
    c = StopController()
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup starts its command
    try:
        with c.installed():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGHUP)
            assert not c.requested
    finally:
        signal.signal(signal.SIGHUP, before)


def test_a_signal_held_back_while_children_start_arrives_afterwards():
    c = StopController()
    with c.installed():
        with stop.blocked():
            # To this thread, which holds it back: sent to the process, the suite's background threads
            # (which do not block it) could take it, and the test would fail by chance.
            signal.pthread_kill(threading.get_ident(), signal.SIGTERM)
            assert not c.requested  # held back
        assert c.requested and c.signum == signal.SIGTERM


ORPHAN = """
import os, sys, time
from centerloss_cli.procs import stop
c = stop.StopController()
with c.installed():
    stop.stop_when_orphaned(int(sys.argv[1]), interval=0.05)
    print("watching", flush=True)
    while not c.requested:
        time.sleep(0.01)
open(sys.argv[2], "w").write(str(c.signum))
"""

PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", sys.argv[1], str(__import__("os").getpid()), sys.argv[2]],
                         stdout=subprocess.PIPE, text=True)
assert child.stdout.readline().strip() == "watching"
print(child.pid, flush=True)
time.sleep(60)
"""


def exited(pid: int) -> bool:
    """Gone, or a zombie that nobody reaped (an orphan's new parent may never reap it)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.mark.process  # starts a Python process of its own
def test_a_child_stops_itself_when_its_parent_is_killed(tmp_path):
    """A sweep worker whose sweep was killed with -9 used to train on as an orphan, then idle for good."""
    done = tmp_path / "stopped"
    parent = subprocess.Popen([sys.executable, "-c", PARENT, ORPHAN, str(done)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 10
    while not done.exists():
        assert time.monotonic() < deadline, "the orphan did not stop"
        time.sleep(0.05)
    assert done.read_text() == str(int(signal.SIGTERM))
    deadline = time.monotonic() + 5
    while not exited(child):
        assert time.monotonic() < deadline, "the orphan stopped, but its process lives on"
        time.sleep(0.05)


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143), (signal.SIGUSR2, 140),
                                       (signal.SIGHUP, 129)])
def test_a_stop_exits_with_its_signals_code(sig, code):
    """Ctrl-C at a terminal, a kill, Slurm's warning before a time limit, a closed terminal: each stop ends
    the process with 128 + its signal, as a shell reports it."""
    from centerloss_cli.errors import Interrupted

    assert Interrupted("stopped", sig).exit_code == code
