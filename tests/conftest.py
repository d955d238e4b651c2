"""Test data: the real MNIST when $CENTERLOSS_DATA points at it (as `make test` does where ../shared
exists), otherwise small synthetic IDX files whose classes are learnable patterns."""
from __future__ import annotations

import csv
import gzip
import json
import os
import queue
import shutil
import struct
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
import typer
from typer.testing import CliRunner

from centerloss_cli.cli import app
from centerloss_cli.engine.runtime import Runtime

# The tests' own trainings take one thread where whole processes run beside them (the background lane and
# the fault-injected runs), leaving them the other core (measured: the whole suite took 159 s on two
# threads); the quick lane (-m "not process") starts none, and takes two (a tiny step: 84 ms on one thread,
# 46 ms on two). Set per session by _start_early.
torch.set_num_threads(1)


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """An IDX file (magic 2051 for images, 2049 for labels), raw or gzipped."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    magic = 2051 if array.ndim == 3 else 2049
    raw = struct.pack(">II", magic, len(array)) + b"".join(struct.pack(">I", d) for d in array.shape[1:])
    raw += array.tobytes()
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def synthetic_mnist(root: Path, n_train: int = 600, n_test: int = 300, gz: bool = True, seed: int = 0) -> Path:
    """Four IDX files: digit d is a bright 6x6 block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28))
        for i, d in enumerate(labels):
            r, c = 3 + (d // 5) * 12, 2 + (d % 5) * 5
            images[i, r : r + 6, c : c + 6] = 250
        suffix = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
    return root


class Mnist:
    """Where the tests' MNIST lives, and the flags that point a run at it."""

    def __init__(self, root: Path, real: bool):
        self.root, self.real = root, real

    @property
    def args(self) -> list[str]:
        return ["--data-dir", str(self.root)] + ([] if self.real else ["--no-verify"])

    def config(self, output_dir: str | Path = "outputs", **settings):
        """The tiny settings with `settings` (by field name, e.g. lam=0.1) on this data, as a TrainConfig."""
        from centerloss_cli.settings.config import resolve_config

        given = {**TINY_SETTINGS, "data_dir": str(self.root), "verify": self.real, "output_dir": str(output_dir),
                 **settings}
        return resolve_config(None, {k: v for k, v in given.items() if v is not None})

    def run(self, output_dir: str | Path = "outputs", **settings) -> Path:
        """The folder the tool gives a run of the tiny settings with `settings` on this data: its name
        gains suffixes for the limits, and for the synthetic data's fingerprint."""
        from centerloss_cli.rundir.folder import named_for_data

        return named_for_data(self.config(output_dir, **settings), self.fingerprint).run_dir

    @property
    def fingerprint(self) -> str:
        from centerloss_cli.dataset.loading import load_dataset

        if not hasattr(self, "_fingerprint"):
            self._fingerprint = load_dataset(self.root, verify=self.real).fingerprint
        return self._fingerprint


@pytest.fixture(scope="session")
def mnist(tmp_path_factory) -> Mnist:
    env = os.environ.get("CENTERLOSS_DATA")
    if env and Path(env).is_dir():
        return Mnist(Path(env), real=True)
    if os.environ.get("CENTERLOSS_TEST_REAL") == "required":  # CI's second pass: a skip would hide a broken setup
        raise RuntimeError(f"CENTERLOSS_TEST_REAL=required, but $CENTERLOSS_DATA ({env!r}) is not a folder")
    return Mnist(synthetic_mnist(tmp_path_factory.mktemp("synthetic_mnist")), real=False)


@pytest.fixture
def run_path(mnist) -> Path:
    """Where the tiny run with default settings lives, relative to the test's working folder."""
    return mnist.run()


@pytest.fixture(scope="session")
def runtime():
    """One runtime for the session's CLI commands, as one process of the tool: they share its plotting
    processes. Two of them: a tiny epoch trains in a fraction of the time its plots take to draw, so the
    suite would otherwise wait on one process while the other core idles."""
    rt = Runtime(say=typer.echo, plot_processes=2)
    yield rt
    rt.close()


@pytest.fixture
def run_cli(tmp_path, monkeypatch, runtime):
    """Invoke the CLI in a fresh working folder; returns click's Result."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], obj=runtime)

    return invoke


# A tiny but real run: 32 training images in 4 batches of 8, 16 test images, 1 epoch, and no plots: their
# three figures took 1.2 s of a tiny run's 1.8 s. The tests of plots ask for them (plots=True, small).
TINY_SETTINGS = {"train_limit": 32, "batch_size": 8, "test_limit": 16, "plot_train_samples": 16, "epochs": 1,
                 "plot_dpi": 30, "plots": False}


def flag(key: str, value) -> list[str]:
    """A setting's command-line flag, by TOML key: --epochs 2, --plots, --no-plots."""
    name = key.replace("_", "-")
    if isinstance(value, bool):
        return [f"--{name}" if value else f"--no-{name}"]
    return [f"--{name}", str(value)]


def tiny(**changes) -> list[str]:
    """The CLI flags of the tiny run, with `changes` (by TOML key, e.g. epochs=2; None drops one), and --quiet."""
    settings = {k: v for k, v in {**TINY_SETTINGS, **changes}.items() if v is not None}  # None: leave it out
    return [a for k, v in settings.items() for a in flag(k, v)] + ["--quiet"]


TINY = tiny()


def cpu_bf16(monkeypatch, avx512_bf16: bool, amx: bool = False) -> None:
    """This CPU as torch would report it, with or without each bf16 instruction set, and no switch capping its
    kernels: a test of what --precision auto picks fixes the answer itself, so that its verdict is the same on
    every CPU (CI's first pass plays an AVX2 machine through ONEDNN_MAX_CPU_ISA and ATEN_CPU_CAPABILITY)."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")


ROOT = Path(__file__).parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def python_blocks(page: Path) -> list[str]:
    """The ```python blocks of a markdown page (README.md, a page of docs/)."""
    import re

    return re.findall(r"```python\n(.*?)```", page.read_text(), re.S)


def files_of(folder: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


def one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


def checkpoint(run: Path) -> dict:
    return torch.load(Path(run) / "checkpoint.pt", weights_only=True)


def assert_same_run(a: Path, b: Path, threads: int | None = None) -> None:
    """Two runs bit-identical: weights, centers, step and epoch; metrics.csv alike but for the seconds;
    the same plots. `threads`: the count both must have trained with."""
    ca, cb = checkpoint(a), checkpoint(b)
    assert (ca["step"], ca["epoch"]) == (cb["step"], cb["epoch"])
    if threads is not None:
        assert ca["threads"] == cb["threads"] == threads
    for k, v in ca["model"].items():
        assert torch.equal(v, cb["model"][k]), k
    assert torch.equal(ca["center_loss"]["centers"], cb["center_loss"]["centers"])
    def rows(run: Path) -> list[dict]:
        with open(run / "metrics.csv") as f:
            return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]

    assert rows(a) == rows(b)
    assert sorted(p.name for p in (a / "plots").glob("*")) == sorted(p.name for p in (b / "plots").glob("*"))


def max_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two checkpoints' weights and centers."""
    tensors = lambda c: [*c["model"].values(), c["center_loss"]["centers"]]  # noqa: E731
    return max((x - y).abs().max().item() for x, y in zip(tensors(a), tensors(b), strict=True))


def assert_each_matches_only_itself(left: Path, right: Path, names: list[str], tol: float) -> None:
    """Run `name` under `left` and under `right` agree within `tol`, and every two different runs differ by
    far more than the largest such agreement, so a swap of runs, or runs that all came out alike, fails."""
    same = [max_difference(checkpoint(left / n), checkpoint(right / n)) for n in names]
    assert max(same) <= tol, dict(zip(names, same))
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            other = max_difference(checkpoint(left / a), checkpoint(right / b))
            assert other > 10 * max(max(same), 1e-7), (a, b, other, same)


# --- tiny runs trained once per session, copied where a test needs its own -----------------------------

class TrainedRuns:
    """The tiny run trained once for each number of epochs; `copy(epochs, dest)` gives a test its own copy."""

    def __init__(self, root: Path, mnist: Mnist, runtime: Runtime):
        self.root, self.mnist, self.runtime, self._made = root, mnist, runtime, {}

    def copy(self, epochs: int = 1, dest: Path | None = None, **settings) -> Path:
        from centerloss_cli.engine.training import train

        key = (epochs, tuple(sorted(settings.items())))
        if key not in self._made:
            out = self.root / f"e{epochs}_{len(self._made)}"
            config = self.mnist.config(out, epochs=epochs, **{"plots": True, **settings})  # trained once: with plots
            self._made[key] = train(config, runtime=self.runtime, progress=False).run_dir
        source = self._made[key]
        dest = Path(dest) if dest is not None else self.mnist.run(epochs=epochs, **settings)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(source, dest)
        return dest


@pytest.fixture(scope="session")
def trained(tmp_path_factory, mnist, runtime) -> TrainedRuns:
    return TrainedRuns(tmp_path_factory.mktemp("trained"), mnist, runtime)


# --- fault-injected runs for test_reliability.py ------------------------------------------------------

DRIVER = Path(__file__).with_name("fault_driver.py")
TWO_EPOCHS = tiny(epochs=2, plots=True)  # 4 steps an epoch; the plots are among what must not be lost
KILL_POINTS = {
    "mid-epoch-1": ["step", "3"],
    "mid-epoch-2": ["step", "6"],
    "config-write": ["write", "config.json", "1"],
    "checkpoint-write-epoch-1": ["write", "checkpoint.pt", "1"],
    "checkpoint-write-epoch-2": ["write", "checkpoint.pt", "2"],
    "features-write": ["write", "epoch_002.npz", "1"],
    "plots-queued-not-drawn": ["call", "plots.service.PlotService.submit_epoch", "1"],
    "metrics-write-after-checkpoint": ["write", "metrics.csv", "2"],
}
SWEEP = ["sweep", "--lambda", "0.01,0.1", "--alpha", "0.5"]
# Each fault: (fault_driver.py's fault spec, the command, to which the data flags and TWO_EPOCHS are added).
FAULTS = {
    **{f"kill {name}": ([*spec, "kill"], ["train"]) for name, spec in KILL_POINTS.items()},
    "sigint train": (["step", "6", "sigint"], ["train"]),
    "sigterm train": (["step", "6", "sigterm"], ["train"]),
    # Ctrl-C after evaluate's first extract (test set), again after its second: stops inside evaluation.
    "sigint twice evaluating": (["call", "engine.evaluation.extract", "1,2", "sigint"], ["train"]),
    "sigint sweep": (["step", "6", "sigint"], SWEEP),
}


# One fork server: the faults then take one core at a time, and the rest of the suite the other. Two
# made the whole suite slower (measured: 162 s against 137 s), the early tests crawling beside them.
SERVERS = 1


class FaultRuns:
    """Each fault of FAULTS injected into its own `centerloss` process, in its own folder, one at a time
    in the background from the start of the session. Each process is a fork of a server that has
    imported torch and the CLI once (fault_driver.py serve), so the faults do not pay that import each.
    The faults fire at exact steps and writes, never at a time, so what runs beside them changes
    nothing. `runs[name]` waits for one: (its folder, a CompletedProcess with its exit code and output)."""

    def __init__(self, tmp_path_factory, mnist: Mnist):
        env = {**os.environ, "PYTHONPATH": str(DRIVER.parent)}
        self._servers = queue.Queue()
        for _ in range(SERVERS):
            self._servers.put(subprocess.Popen([sys.executable, str(DRIVER), "serve"], stdin=subprocess.PIPE,
                                               stdout=subprocess.PIPE, env=env, text=True))
        self._pool = ThreadPoolExecutor(SERVERS)
        self._runs: dict[str, Future] = {
            name: self._pool.submit(self._run, tmp_path_factory.mktemp(name.replace(" ", "-")),
                                    [*fault, "--", *command, *mnist.args, *TWO_EPOCHS])
            for name, (fault, command) in FAULTS.items()
        }

    def _run(self, cwd: Path, args: list[str]) -> tuple[Path, subprocess.CompletedProcess]:
        server = self._servers.get()
        try:
            log = cwd.parent / f"{cwd.name}.log"
            server.stdin.write(json.dumps({"cwd": str(cwd), "log": str(log), "args": args}) + "\n")
            server.stdin.flush()
            status = json.loads(server.stdout.readline())["status"]
        finally:
            self._servers.put(server)
        return cwd, subprocess.CompletedProcess(args, status, stdout=log.read_text())

    def __getitem__(self, name: str) -> tuple[Path, subprocess.CompletedProcess]:
        return self._runs[name].result()

    def close(self) -> None:
        self._pool.shutdown()
        while not self._servers.empty():
            server = self._servers.get()
            server.stdin.close()
            server.wait(60)


@pytest.fixture(scope="session")
def fault_runs(tmp_path_factory, mnist) -> FaultRuns:
    runs = FaultRuns(tmp_path_factory, mnist)
    yield runs
    runs.close()


# --- whole processes run in the background: a user's script, a shell script, a stopped sweep ------------

# name -> what to run in the background, given its own working folder and the tests' data; what it
# returns is what `background[name]` gives the test that checks it.
BACKGROUND: dict[str, Callable[[Path, Mnist], object]] = {}


def in_background(name: str):
    """Register something whole processes do, which a test checks afterwards: it runs from the start of the
    session, one at a time, beside the rest of the suite, on the core that the suite leaves idle while it
    waits for plots."""
    def register(work):
        BACKGROUND[name] = work
        return work

    return register


def run_process(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env={**os.environ, "MPLBACKEND": "Agg", **(env or {})}, capture_output=True,
                          text=True, timeout=300)


class Background:
    """What BACKGROUND registers, run one at a time in a thread from the start of the session: what the
    modules of the selected tests registered."""

    def __init__(self, tmp_path_factory, mnist: Mnist, modules: set[str]):
        self._pool = ThreadPoolExecutor(1)
        self._runs = {name: self._pool.submit(self._run, tmp_path_factory.mktemp(name.replace(" ", "-")), work, mnist)
                      for name, work in BACKGROUND.items() if work.__module__ in modules}

    @staticmethod
    def _run(cwd: Path, work, mnist: Mnist) -> tuple[Path, object]:
        return cwd, work(cwd, mnist)

    def __getitem__(self, name: str) -> tuple[Path, object]:
        return self._runs[name].result()

    def close(self) -> None:
        self._pool.shutdown()


@pytest.fixture(scope="session")
def background(request, tmp_path_factory, mnist) -> Background:
    runs = Background(tmp_path_factory, mnist, {item.module.__name__ for item in request.session.items})
    yield runs
    runs.close()


LATE = ("fault_runs", "background")  # fixtures of processes started with the session


@pytest.fixture(scope="session", autouse=True)
def _start_early(request):
    """Start the fault-injected runs and the background processes with the session when any selected test
    needs them: they run beside the rest of the suite, on the core that it leaves idle while it waits."""
    started = False
    for fixture in LATE:
        if any(fixture in getattr(item, "fixturenames", ()) for item in request.session.items):
            request.getfixturevalue(fixture)
            started = True
    torch.set_num_threads(1 if started else min(2, os.cpu_count() or 1))


def pytest_collection_modifyitems(items):
    """The tests that read those processes are marked `process` (as the tests that start one themselves are),
    and go last, when they are most likely done."""
    for item in items:
        if any(f in getattr(item, "fixturenames", ()) for f in LATE):
            item.add_marker(pytest.mark.process)
    items.sort(key=lambda item: any(f in getattr(item, "fixturenames", ()) for f in LATE))


# --- the suite leaves the checkout as it found it ------------------------------------------------------

# What running Python and pytest makes in a checkout by design; anything else a test wrote there is a bug
# (a run folder in the user's outputs/, say).
EXPECTED_LITTER = {".git", ".venv", ".pytest_cache", ".hypothesis", "__pycache__"}


def checkout_files() -> set[Path]:
    found = set()
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in EXPECTED_LITTER and not d.endswith(".egg-info")]
        found.update(Path(folder, name).relative_to(ROOT) for name in files + dirs)
    return found


def pytest_sessionstart(session):
    session.config._checkout_before = checkout_files()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_checkout_before", None)
    if before is None or hasattr(session.config, "workerinput"):
        return
    new = sorted(map(str, checkout_files() - before))
    if new:  # a failure, said after the tests' own summary (pytest.exit here would cut that summary off)
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.write_line(f"FAILED: the suite left {len(new)} file(s) in the checkout: {', '.join(new[:5])}",
                            red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
