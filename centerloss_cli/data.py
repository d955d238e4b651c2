"""Reading MNIST's IDX files into device-resident splits, and batching them.

Finding and fetching the files is fetch.py's job; this module only reads what is on disk.
"""
from __future__ import annotations

import functools
import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from .errors import DataError
from .fetch import SPLIT_FILES, data_root, ensure_mnist, verify_md5

IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
NUM_CLASSES = 10
# A fixed seed for choosing --train-limit/--test-limit subsets, so that runs with different
# training seeds still see the same images.
SUBSET_SEED = 1234


def read_bytes(path: Path) -> bytes:
    """The uncompressed content of a raw or gzipped IDX file."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                return gzip.decompress(f.read())
            if path.suffix == ".gz":
                raise DataError(f"{path}: not a gzip file (a .gz name, but no gzip header)")
            return f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        if isinstance(e, PermissionError):
            raise DataError(f"{path}: cannot be read ({e.strerror})") from e
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from e


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
        shape, offset = (count, rows, cols), 16
    else:
        shape, offset = (count,), 8
    need = offset + count * (shape[1] * shape[2] if len(shape) == 3 else 1)
    if len(raw) != need:
        raise DataError(f"{path}: truncated or oversized IDX file ({len(raw)} bytes, header says {need})")
    return torch.frombuffer(bytearray(raw[offset:]), dtype=torch.uint8).reshape(shape)


def _load_file(path: Path, name: str, verify: bool) -> torch.Tensor:
    """The parsed (and verified) file. A process that loads the data again (a sweep, a notebook, the
    tests) reuses the last few parses; a file changed on disk has another size or time, so is read again."""
    st = path.stat()
    return _parse_file(str(path), st.st_size, st.st_mtime_ns, name, verify)


@functools.lru_cache(maxsize=8)
def _parse_file(path: str, size: int, mtime_ns: int, name: str, verify: bool) -> torch.Tensor:
    raw = read_bytes(Path(path))
    if verify:
        verify_md5(raw, name, Path(path))
    # Callers copy before they change anything (indexing, .float()), so the cached tensor stays as read.
    return parse_idx(raw, Path(path), IMAGE_MAGIC if "images" in name else LABEL_MAGIC)


@dataclass
class Split:
    """One split on the device: images already scaled to float, labels as int64."""

    images: torch.Tensor  # (N, 1, 28, 28) float32, (x - 127.5) / 128
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class MNIST:
    train: Split
    test: Split
    source: str
    root: Path


def load_split(files: dict[str, Path], split: str, verify: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw uint8 images (N, 28, 28) and labels (N,) of one split, verified."""
    image_name, label_name = SPLIT_FILES[split]
    images = _load_file(files[image_name], image_name, verify)
    labels = _load_file(files[label_name], label_name, verify)
    if len(images) != len(labels):
        raise DataError(
            f"{files[image_name]}: {len(images)} images but {files[label_name]} has {len(labels)} labels"
        )
    if len(labels) and int(labels.max()) >= NUM_CLASSES:
        raise DataError(f"{files[label_name]}: label {int(labels.max())} outside 0..9")
    return images, labels


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


def load_mnist(
    data_dir: str | os.PathLike | None = None,
    device: torch.device | str = "cpu",
    train_limit: int | None = None,
    test_limit: int | None = None,
    verify: bool = True,
) -> MNIST:
    """Fetch (if needed), verify and load MNIST onto `device`, optionally as fixed subsets."""
    root = data_root(data_dir)
    files, source = ensure_mnist(root)
    device = torch.device(device)
    train = to_split(*load_split(files, "train", verify), train_limit, device)
    test = to_split(*load_split(files, "test", verify), test_limit, device)
    return MNIST(train=train, test=test, source=source, root=root)


def epoch_permutation(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The order of epoch `epoch`: a pure function of (seed, epoch), so a resumed run replays it exactly."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).to(device)


def batches(split: Split, order: torch.Tensor, batch_size: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of `split` in `order`, from batch number `start` on; the last one may be short."""
    for i in range(start * batch_size, len(order), batch_size):
        idx = order[i : i + batch_size]
        yield split.images[idx], split.labels[idx]


def num_batches(n: int, batch_size: int) -> int:
    return -(-n // batch_size)


def class_counts(labels: torch.Tensor) -> list[int]:
    return torch.bincount(labels.cpu(), minlength=NUM_CLASSES).tolist()
