"""The sweep runner: a grid of configs, one run each, evaluated on the same held-out items, one table."""

import json
import math

import pytest

from rft.__main__ import main
from rft.sweep import SweepPoint, parse_grid, wilson_interval


def test_a_grid_gives_every_combination():
    points = parse_grid(["grpo.beta=0,0.04", "sampling.num_generations=4,8"])
    assert [p.overrides for p in points] == [
        {"grpo.beta": 0, "sampling.num_generations": 4}, {"grpo.beta": 0, "sampling.num_generations": 8},
        {"grpo.beta": 0.04, "sampling.num_generations": 4}, {"grpo.beta": 0.04, "sampling.num_generations": 8}]
    assert points[1].label == "grpo.beta=0, sampling.num_generations=8"
    assert points[1].slug == "beta-0-num_generations-8"
    assert parse_grid([]) == [SweepPoint({})]


def test_wilson_interval_on_hand_computed_values():
    low, high = wilson_interval(19, 50)
    assert low == pytest.approx(0.2585, abs=1e-3) and high == pytest.approx(0.5187, abs=1e-3)
    low, high = wilson_interval(0, 30)
    assert low == pytest.approx(0.0, abs=1e-12) and high == pytest.approx(0.1135, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


@pytest.mark.slow
def test_a_sweep_of_two_tiny_runs_writes_its_table(tmp_path, tiny_model_dir, capsys):
    code = main(["sweep", "--preset", "arithmetic", "--name", "tiny", "--runs-root", str(tmp_path),
                 "--set", f"model.name_or_path={tiny_model_dir}", "--set", "sft.enabled=false",
                 "--set", "schedule.max_steps=1", "--set", "sampling.num_generations=2",
                 "--set", "sampling.max_completion_length=4", "--set", "data.limit=8",
                 "--grid", "grpo.beta=0,0.04", "--eval-count", "4", "--eval-max-new-tokens", "4", "--no-progress"])
    assert code == 0
    record = json.loads((tmp_path / "tiny.sweep.json").read_text())
    assert [row["point"] for row in record["rows"]] == ["start", "grpo.beta=0", "grpo.beta=0.04"]
    assert all(row["metric"] == "accuracy" and row["trials"] == 4 for row in record["rows"])
    assert all(0 <= row["low"] <= row["rate"] <= row["high"] <= 1 for row in record["rows"])
    runs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(runs) == 2 and all("tiny-" in name for name in runs)
    assert sorted(row["run"] for row in record["rows"][1:]) == runs
    table = (tmp_path / "tiny.sweep.md").read_text()
    assert "| grpo.beta=0.04 | step 1 | accuracy |" in table and "95% interval" in table
