"""Reading MNIST's IDX files into device-resident splits, and batching them.

Finding and fetching the files is fetch.py's job; this module only reads what is on disk.
"""
from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..errors import DataError
from .fetch import (
    IDX_FILES,
    SPLIT_FILES,
    data_root,
    ensure_dataset,
    fingerprint,
    is_default_root,
    read_bytes,
    verify_md5,
)

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
NUM_CLASSES = 10
# A fixed seed for choosing --train-limit/--test-limit subsets, so that runs with different
# training seeds still see the same images.
SUBSET_SEED = 1234


def parse_idx(raw: bytes, path: Path, expect_magic: int) -> torch.Tensor:
    """A uint8 tensor from IDX bytes; images come out as (N, 28, 28), labels as (N,)."""
    if len(raw) < 8:
        raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no complete header)")
    magic, count = struct.unpack(">II", raw[:8])
    if magic != expect_magic:
        raise DataError(f"{path}: wrong magic number {magic}, expected {expect_magic}")
    if magic == IMAGE_MAGIC:
        if len(raw) < 16:
            raise DataError(f"{path}: truncated IDX file ({len(raw)} bytes, no complete header)")
        rows, cols = struct.unpack(">II", raw[8:16])
        if rows == 0 or cols == 0:
            raise DataError(f"{path}: images of {rows}x{cols} pixels; LeNet++ takes 28x28")
        shape, offset = (count, rows, cols), 16
    else:
        shape, offset = (count,), 8
    need = offset + count * (shape[1] * shape[2] if len(shape) == 3 else 1)
    if len(raw) != need:
        raise DataError(f"{path}: truncated or oversized IDX file ({len(raw)} bytes, header says {need})")
    if count == 0:
        raise DataError(f"{path}: holds no {'images' if magic == IMAGE_MAGIC else 'labels'}")
    return torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8).reshape(shape)


def _load_file(path: Path, name: str, verify: bool, dataset: str = "mnist") -> tuple[torch.Tensor, str]:
    """The parsed file and the md5 of its uncompressed content, verified when asked."""
    raw = read_bytes(path)
    digest = hashlib.md5(raw).hexdigest()
    if verify:
        verify_md5(digest, name, path, dataset)
    return parse_idx(raw, path, IMAGE_MAGIC if "images" in name else LABEL_MAGIC), digest


@dataclass
class Split:
    """One split on the device: images already scaled to float, labels as int64."""

    images: torch.Tensor  # (N, 1, 28, 28) float32, (x - 127.5) / 128
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class LoadedData:
    train: Split
    test: Split
    source: str
    root: Path
    # of the four files as read (fetch.fingerprint); the dataset's own is fetch.DATASETS[...].fingerprint
    fingerprint: str
    dataset: str = "mnist"  # a key of fetch.DATASETS


def check_split(files: dict[str, Path], split: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    """One split's images are 28x28, as many as its labels, and labelled 0..9."""
    image_name, label_name = SPLIT_FILES[split]
    if images.shape[1:] != (28, 28):
        raise DataError(
            f"{files[image_name]}: images of {images.shape[1]}x{images.shape[2]} pixels; LeNet++ takes 28x28")
    if len(images) != len(labels):
        raise DataError(
            f"{files[image_name]}: {len(images)} images but {files[label_name]} has {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{files[label_name]}: label {int(labels.max())} outside 0..9")


def subset_indices(n: int, limit: int | None) -> torch.Tensor | None:
    """A fixed, seeded, sorted choice of `limit` of `n` indices (None: take all)."""
    if limit is None or limit >= n:
        return None
    g = torch.Generator().manual_seed(SUBSET_SEED)
    return torch.randperm(n, generator=g)[:limit].sort().values


def to_split(images: torch.Tensor, labels: torch.Tensor, limit: int | None, device: torch.device) -> Split:
    idx = subset_indices(len(labels), limit)
    if idx is not None:
        images, labels = images[idx], labels[idx]
    # Move the uint8 bytes (4x smaller) and scale on the device, once.
    x = images.to(device).unsqueeze(1).float().sub_(127.5).div_(128.0)
    return Split(images=x, labels=labels.to(device=device, dtype=torch.long))


def load_dataset(
    data_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    train_limit: int | None = None,
    test_limit: int | None = None,
    verify: bool = True,
    may_create: bool | None = None,
    dataset: str = "mnist",
    say: Callable[[str], None] = lambda message: None,
) -> LoadedData:
    """Fetch (if needed), verify and load MNIST or Fashion-MNIST (`dataset`) onto `device`, optionally as
    fixed subsets. A data folder that does not exist is made and fetched into only when `may_create`;
    by default, only ./data is. `say` is the caller's voice, for what fetching does."""
    root = data_root(data_dir, dataset)
    create = is_default_root(data_dir, dataset) if may_create is None else may_create
    files, source = ensure_dataset(root, may_create=create, say=say, dataset=dataset)
    device = torch.device(device)
    try:
        # Each file is read once: its tensor and its md5 (which also makes the data's fingerprint).
        loaded = {name: _load_file(files[name], name, verify, dataset) for name in IDX_FILES}
        splits = {}
        for split, limit in (("train", train_limit), ("test", test_limit)):
            images, labels = (loaded[name][0] for name in SPLIT_FILES[split])
            check_split(files, split, images, labels)
            splits[split] = to_split(images, labels, limit, device)
    except (MemoryError, RuntimeError) as e:  # torch says "can't allocate memory" as a RuntimeError
        if isinstance(e, RuntimeError) and "allocate" not in str(e):
            raise
        raise DataError(f"not enough memory to load {dataset} onto {device} (a memory limit, ulimit -v?); it "
                        "takes about 0.5 GiB") from None
    return LoadedData(train=splits["train"], test=splits["test"], source=source, root=root,
                 fingerprint=fingerprint([loaded[name][1] for name in IDX_FILES]), dataset=dataset)


def pass_permutation(n: int, seed: int, pass_: int, device: torch.device) -> torch.Tensor:
    """The order of pass `pass_` (1, 2, ...) over the n training images: a pure function of (seed, pass)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + pass_)
    return torch.randperm(n, generator=g).to(device)


def stream_order(n: int, seed: int, first_step: int, steps: int, batch_size: int, device: torch.device) -> torch.Tensor:
    """The images of steps first_step .. first_step + steps - 1 (counted from 0), batch after batch.

    The batch stream is the passes' permutations laid end to end and cut into batches of batch_size:
    every batch is full, and one may span two passes, as in Caffe's data layer. The stream is a pure
    function of (seed, step), so a run resumed at any step replays it exactly."""
    lo, hi = first_step * batch_size, (first_step + steps) * batch_size
    passes = range(lo // n, (hi - 1) // n + 1)
    order = torch.cat([pass_permutation(n, seed, p + 1, device) for p in passes])
    return order[lo - passes[0] * n : hi - passes[0] * n]


def batches(split: Split, order: torch.Tensor, batch_size: int,
            start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of `split` in `order`, from batch number `start` on."""
    for i in range(start * batch_size, len(order), batch_size):
        idx = order[i : i + batch_size]
        yield split.images[idx], split.labels[idx]


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def class_counts(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels.cpu(), minlength=NUM_CLASSES).tolist()
