"""scripts/gpu_check.sh, exactly as the device check runs it but on the CPU on a tiny schedule, so that the
first GPU run cannot fail on a missing file or a typo. It reads the real MNIST, as on the device."""
import json
import os
import shutil
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
    # Every step must run here, so the budget is generous: on a loaded CI machine the smoke's own 120 s ran out.
    return subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--smoke", "--budget", "500", "--out",
                           str(cwd / "out"), "--data", str(mnist.root)], env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=600)


def test_the_device_check_runs_end_to_end_and_packs_at_most_8_files(background, mnist):
    if not mnist.real:
        pytest.skip("the real MNIST is not here (make test TEST_DATA=./data uses the one make demo fetched; "
                    "../shared/mnist is found by itself)")
    cwd, done = background["gpu check smoke"]
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    files = sorted(p.name for p in (cwd / "out").iterdir())
    assert files == ["alpha_compactness.png", "alpha_grid_test.png", "figure2.png", "figure3_compactness.png",
                     "figure3_grid_test.png", "log.txt", "results.json", "results.md"]
    results = json.loads((cwd / "out" / "results.json").read_text())
    for key in ("captured images/s", "eager images/s", "full schedule s", "batched 5 / one run", "reproduction s"):
        assert isinstance(results[key], (int, float)), (key, results.get(key))
    assert "| full schedule s (target 60) |" in (cwd / "out" / "results.md").read_text()


@pytest.mark.process  # starts a Python process of its own
def test_a_missing_data_folder_is_one_line_in_the_first_seconds(tmp_path):
    done = subprocess.run(["bash", str(SCRIPT), "--device", "cpu", "--smoke", "--out", str(tmp_path / "out"),
                           "--data", str(tmp_path / "nothing")], env={**os.environ, "PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "no MNIST in" in done.stderr and "make gpu-data" in done.stderr


@pytest.mark.process  # starts a Python process of its own
def test_gpu_data_takes_the_demos_mnist_where_there_is_no_shared_copy(tmp_path, mnist):
    """`make gpu-data` copied only from ../shared/mnist, which a user's machine has not; make demo had just
    put MNIST in ./data."""
    work = tmp_path / "checkout"
    raw = work / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(SCRIPT.parent.parent / "Makefile", work)
    for f in mnist.root.rglob("*-ubyte*"):
        shutil.copy(f, raw)
    env = {k: v for k, v in os.environ.items() if k != "CENTERLOSS_DATA"}
    done = subprocess.run(["make", "-s", "gpu-data"], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "copied MNIST from data/MNIST/raw into data/mnist" in done.stdout
    assert sorted(p.name for p in (work / "data" / "mnist").iterdir()) == sorted(p.name for p in raw.iterdir())
    shutil.rmtree(raw.parent)
    missing = subprocess.run(["make", "-s", "gpu-data"], cwd=work, env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "run make demo, which fetches it" in missing.stdout
