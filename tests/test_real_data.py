"""What only the real datasets can show: their checksums and counts, and a run on verified data, named
and fingerprinted as the dataset's own. CI's second pass runs these (and the Slurm tests) with
../shared beside the checkout; elsewhere they are skipped, saying why."""
import json
import os
from pathlib import Path

import pytest
import torch

from centerloss_cli.dataset.fetch import DATASETS
from centerloss_cli.dataset.loading import load_dataset

MNIST_FINGERPRINT = DATASETS["mnist"].fingerprint

FASHION = os.environ.get("CENTERLOSS_TEST_FASHION")
pytestmark = pytest.mark.real_data


@pytest.fixture
def real(mnist):
    if not mnist.real:
        pytest.skip("the real MNIST is not here (make test TEST_DATA=./data uses the one make demo fetched; "
                    "../shared/mnist is found by itself)")
    return mnist


def test_real_mnist_verifies_with_its_class_counts(real):
    m = load_dataset(real.root, verify=True)
    assert torch.bincount(m.train.labels).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(m.test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert m.fingerprint == MNIST_FINGERPRINT


def test_a_run_on_real_mnist_is_named_and_fingerprinted_as_mnist(real, run_cli):
    from conftest import TINY

    result = run_cli("train", *real.args, *TINY)
    assert result.exit_code == 0, result.output
    (run,) = Path("outputs").iterdir()
    assert run.name == "lambda0.01_alpha0.5_seed0_b8_n32_test16_plot16"  # no _data suffix: it is MNIST's own
    assert json.loads((run / "config.json").read_text())["data_fingerprint"] == MNIST_FINGERPRINT


@pytest.mark.skipif(not FASHION, reason="the real Fashion-MNIST is not here (make test TEST_FASHION=DIR uses one; "
                                         "../shared/fashion-mnist is found by itself)")
def test_the_real_fashion_mnist_verifies(run_cli):
    result = run_cli("data", "--dataset", "fashion-mnist", "--data-dir", FASHION)
    assert result.exit_code == 0, result.output
    assert "(md5 verified)" in result.output and "60000 images" in result.output
