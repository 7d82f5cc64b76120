"""The sweep runner: a grid of configs, one run each, evaluated on the same held-out items, one table."""

import json
import re

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



def wordle_summary(secrets: list[str], feedback_use: list[float]) -> dict:
    """An evaluation file's summary as `python -m rft eval wordle --out` writes it: six turns a game."""
    games = [{"secret": secret, "won": False, "num_guesses": 6,
              "turns": [{"invalid": turn % 2 == 1, "rewards": {"output_format_check": 1.0, "uses_previous_feedback": use}}
                        for turn in range(6)]} for secret, use in zip(secrets, feedback_use)]
    return {"games": len(games), "details": games}


def test_wordle_evaluations_compare_their_reward_means_paired_by_secret(tmp_path, capsys):
    secrets = [f"SEC{i:02d}" for i in range(20)]
    start = [-0.1 * (i % 5) for i in range(20)]
    files = {"warm": wordle_summary(secrets, start), "later": wordle_summary(secrets, [u - 0.1 for u in start]),
             "elsewhere": wordle_summary([s[::-1] for s in secrets], start)}
    for name, summary in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(summary))
    assert main(["eval-diff", *(str(tmp_path / f"{name}.json") for name in files)]) == 0
    table = capsys.readouterr().out
    assert "| warm | base model | valid guesses | 50.0% |" in table and "training time" not in table
    # Every game lost the same 0.1: paired by secret, the change is certain; the mean itself is not.
    low, high = map(float, re.search(r"\| later \| uses_previous_feedback \| -0\.300 \| (\S+) to (\S+) \| "
                                      r"-0\.100 \(-0\.100 to -0\.100\) \|", table).groups())
    assert low < -0.3 < high
    assert "| elsewhere | uses_previous_feedback | -0.200 |" in table and "other secrets: not paired" in table


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
    assert re.search(r"\| 4 \| (\d+m )?\d+s \|$", table.splitlines()[3])  # how long the run trained
    assert table.splitlines()[2].startswith("| start | base model |") and table.splitlines()[2].endswith("| 4 |  |")
