"""scripts/gpu_check.sh, exactly as the device check runs it but on the CPU on a tiny schedule, so that the
first GPU run cannot fail on a missing file or a typo. It reads the real MNIST, as on the device."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import in_background

SCRIPT = Path(__file__).parent.parent / "scripts" / "gpu_check.sh"
pytestmark = pytest.mark.real_data


@in_background("gpu check smoke")
def smoke(cwd: Path, mnist):
    if not mnist.real:
        return None
    return subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(cwd / "out"), "--data",
                           str(mnist.root)], env={**os.environ, "PYTHON": sys.executable}, capture_output=True,
                          text=True, timeout=600)


def test_the_device_check_runs_end_to_end_and_packs_at_most_8_files(background, mnist):
    if not mnist.real:
        pytest.skip("the real MNIST is not here (make test finds it in ../shared/mnist)")
    cwd, done = background["gpu check smoke"]
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    files = sorted(p.name for p in (cwd / "out").iterdir())
    assert files == ["alpha_compactness.png", "alpha_grid_test.png", "figure2.png", "figure3_compactness.png",
                     "figure3_grid_test.png", "log.txt", "results.json", "results.md"]
    results = json.loads((cwd / "out" / "results.json").read_text())
    for key in ("captured images/s", "eager images/s", "full schedule s", "batched 5 / one run", "reproduction s"):
        assert isinstance(results[key], (int, float)), (key, results.get(key))
    assert "| full schedule s (target 60) |" in (cwd / "out" / "results.md").read_text()


def test_a_missing_data_folder_is_one_line_in_the_first_seconds(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(tmp_path / "out"),
                           "--data", str(tmp_path / "nothing")], env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "no MNIST in" in done.stderr and "make gpu-data" in done.stderr
