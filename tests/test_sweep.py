"""The sweep runner: a grid of configs, one run each, evaluated on the same held-out items, one table."""

import json

import pytest

from rft.__main__ import main
from rft.sweep import SweepPoint, change_from_start, parse_grid


def test_the_change_from_the_start_is_paired_over_the_same_problems():
    start = {"successes": 3, "trials": 10, "outcomes": [1] * 3 + [0] * 7, "paired": True}
    better = {"successes": 6, "trials": 10, "outcomes": [1] * 6 + [0] * 4, "paired": True}
    difference, low, high = change_from_start(start, better)
    assert difference == pytest.approx(0.3) and low < 0.3 < high
    unpaired = {**better, "paired": False}
    assert change_from_start(start, unpaired)[1] < low  # independent samples: a wider interval


def test_a_grid_gives_every_combination():
    points = parse_grid(["grpo.beta=0,0.04", "sampling.num_generations=4,8"])
    assert [p.overrides for p in points] == [
        {"grpo.beta": 0, "sampling.num_generations": 4}, {"grpo.beta": 0, "sampling.num_generations": 8},
        {"grpo.beta": 0.04, "sampling.num_generations": 4}, {"grpo.beta": 0.04, "sampling.num_generations": 8}]
    assert points[1].label == "grpo.beta=0, sampling.num_generations=8"
    assert points[1].slug == "beta-0-num_generations-8"
    assert parse_grid([]) == [SweepPoint({})]


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
    assert all(row["paired"] and len(row["outcomes"]) == 4 for row in record["rows"])
    assert table.splitlines()[3].count("%") == 6  # rate, its interval, the change and its interval
