"""The schedule as arithmetic: epochs, their ends, and the learning rate of each step."""
import math

import pytest

from centerloss_cli.core.schedule import epoch_end, epochs_left, lr_factor
from centerloss_cli.settings.config import DEFAULTS


def test_epochs_left_counts_the_epoch_ends_as_the_loop_meets_them():
    for total in range(1, 40):
        for per_epoch in range(1, 9):
            for start in range(0, total + 2):
                count, s = 0, start
                while s < total:
                    s, count = epoch_end(s, total, per_epoch), count + 1
                assert epochs_left(start, total, per_epoch) == count, (start, total, per_epoch)


def test_the_official_schedule_drops_at_its_milestones():
    assert [lr_factor(DEFAULTS, s, 10_000) for s in (0, 4999, 5000, 7999, 8000, 9999)] == \
        pytest.approx([1, 1, 0.8, 0.8, 0.64, 0.64])


@pytest.mark.parametrize("schedule,middle", [("linear", 0.5), ("cosine", 0.5), ("step", 1.0)])
def test_a_warmup_rises_to_the_rate_then_the_schedule_decays_it(schedule, middle):
    config = DEFAULTS.with_(lr_schedule=schedule, warmup=100, lr_milestones=(5000,))
    assert [lr_factor(config, s, 1100) for s in (0, 49, 99)] == pytest.approx([0.01, 0.5, 1.0])
    assert lr_factor(config, 100, 1100) == pytest.approx(1.0)  # the first step after the warm-up
    assert lr_factor(config, 600, 1100) == pytest.approx(middle)  # half-way through the decay
    end = lr_factor(config, 1099, 1100)
    assert end == pytest.approx({"linear": 1 / 1000, "cosine": 0.5 * (1 + math.cos(math.pi * 0.999)),
                                 "step": 1.0}[schedule])


def test_the_schedule_is_part_of_a_runs_identity():
    assert DEFAULTS.with_(lr_schedule="linear", warmup=100).run_name == "lambda0.01_alpha0.5_seed0_linear_warmup100"
