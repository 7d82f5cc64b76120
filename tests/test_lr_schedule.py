"""The learning-rate schedule the trainer builds: warm-up applies to every schedule."""

import pytest
import torch

from rft.config import OptimConfig
from rft.grpo.trainer import learning_rate_schedule


def logged_rates(optim: OptimConfig, max_steps: int = 10, steps: int = 6) -> list[float]:
    """The learning_rate of each step's metrics row: read after the step's scheduler.step()."""
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=optim.learning_rate)
    scheduler = learning_rate_schedule(optimizer, optim, max_steps)
    rates = []
    for _ in range(steps):
        optimizer.step()
        scheduler.step()
        rates.append(scheduler.get_last_lr()[0])
    return rates


def test_warm_up_ramps_a_constant_rate_up():
    # transformers' "constant" would log 1e-4 from step 1
    rates = logged_rates(OptimConfig(learning_rate=1e-4, lr_scheduler="constant", warmup_steps=4))
    assert rates == pytest.approx([2.5e-5, 5e-5, 7.5e-5, 1e-4, 1e-4, 1e-4])


def test_a_constant_rate_without_warm_up_stays_constant():
    assert logged_rates(OptimConfig(learning_rate=1e-4, lr_scheduler="constant")) == pytest.approx([1e-4] * 6)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_warm_up_ramps_the_decaying_schedules_up(schedule):
    rates = logged_rates(OptimConfig(learning_rate=1e-4, lr_scheduler=schedule, warmup_steps=4))
    assert rates[:4] == pytest.approx([2.5e-5, 5e-5, 7.5e-5, 1e-4])
    assert rates[5] < rates[4] < 1e-4
