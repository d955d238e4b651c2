"""--dataset fashion-mnist: its own checksums, sources, class names and run identity."""
import os
from pathlib import Path

from conftest import synthetic_mnist, tiny

from centerloss_cli.dataset.fetch import DATASETS, ensure_dataset, fetch_debian_fashion

# The real Fashion-MNIST where it sits beside the checkout (as in CI); Makefile passes it on.
FASHION = os.environ.get("CENTERLOSS_TEST_FASHION")


def test_the_debian_package_files_land_in_torchvisions_layout(tmp_path):
    installed = synthetic_mnist(tmp_path / "usr-share-datasets-fashion-mnist")  # stands in for the package's folder
    fetch_debian_fashion(tmp_path / "data", installed=installed)
    files, source = ensure_dataset(tmp_path / "data", [], dataset="fashion-mnist")
    assert set(files) == set(DATASETS["fashion-mnist"].md5) and source == f"found in {tmp_path / 'data'}"
    assert all(p.parent == tmp_path / "data" / "FashionMNIST" / "raw" for p in files.values())


def test_a_fashion_run_is_its_own_run_with_class_names_in_its_figures(run_cli, mnist, tmp_path):
    data = Path(FASHION) if FASHION else synthetic_mnist(tmp_path / "fashion", seed=2)
    verify = [] if FASHION else ["--no-verify"]
    fashion = run_cli("train", "--dataset", "fashion-mnist", "--data-dir", data, *verify, *tiny(), "--lambda", "0.1")
    assert fashion.exit_code == 0, fashion.output
    runs = list(Path("outputs").iterdir())
    assert len(runs) == 1 and "_fashion-mnist" in runs[0].name  # never MNIST's folder of the same settings
    grid = run_cli("plot", runs[0], "--grid", "--split", "test", "-o", "grid.svg", "--dpi", "30")
    assert grid.exit_code == 0, grid.output
    svg = Path("grid.svg").read_text()
    assert "Ankle boot" in svg and "T-shirt/top" in svg and "Fashion-MNIST test features" in svg
    wrong = run_cli("train", "--dataset", "fashion-mnist", *mnist.args[:2], *tiny(), "--name", "x")
    if mnist.real:  # MNIST's files are not Fashion-MNIST's: the md5 check says so
        assert wrong.exit_code == 2 and "not the original Fashion-MNIST" in wrong.output
