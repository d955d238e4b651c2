"""Test data: the real MNIST when $CENTERLOSS_DATA points at it (as `make test` does where ../shared
exists), otherwise small synthetic IDX files whose classes are learnable patterns."""
from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from centerloss_cli.cli import app


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


@pytest.fixture(scope="session")
def mnist(tmp_path_factory) -> Mnist:
    env = os.environ.get("CENTERLOSS_DATA")
    if env and Path(env).is_dir():
        return Mnist(Path(env), real=True)
    return Mnist(synthetic_mnist(tmp_path_factory.mktemp("synthetic_mnist")), real=False)


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """Invoke the CLI in a fresh working folder; returns click's Result."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args])

    return invoke


# A tiny but real run: 128 training images in 4 batches of 32, 64 test images, 1 epoch.
TINY_SETTINGS = {"train_limit": 128, "batch_size": 32, "test_limit": 64, "plot_train_samples": 64, "epochs": 1}


def tiny(**changes) -> list[str]:
    """The CLI flags of the tiny run, with `changes` (by TOML key, e.g. epochs=2), and --quiet."""
    settings = {**TINY_SETTINGS, **changes}
    return [a for k, v in settings.items() for a in (f"--{k.replace('_', '-')}", str(v))] + ["--quiet"]


TINY = tiny()


def checkpoint(run: Path) -> dict:
    return torch.load(Path(run) / "checkpoint.pt", weights_only=True)


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
