"""reasoning-gym's tasks as built-in datasets (rg:<task>): rows, held-out rows, the scorer as a
reward, the SFT demonstrations, and a two-step run on the tiny model scored by the task's scorer."""

from __future__ import annotations

import json

import pytest

from rft import data, sft
from rft.tasks import reasoning_gym
from rft.config import DataConfig
from rft.grpo.trainer import train
from rft.presets import preset_config
from rft.rewards import RewardRuntime
from rft.runs import read_metrics, read_rollouts, read_status


def test_a_task_gives_seeded_rows_with_what_its_scorer_needs_and_disjoint_held_out_rows():
    config = DataConfig(preset="rg:chain_sum", task_size=40, task_seed=3, eval_size=20)
    rows, held_out = data.load_rows(config), data.load_held_out_rows(config)
    assert 0 < len(rows) <= 40 and len(held_out) == 20
    assert rows == data.load_rows(config)  # the same seed, the same questions
    assert not {row["question"] for row in rows} & {row["question"] for row in held_out}
    row = rows[0]
    assert set(data.example_of(row, config)) == {"question", "answer", "metadata", "task"}
    assert row["task"] == "chain_sum" and isinstance(json.loads(row["metadata"]), dict)
    assert row["prompt"][-1] == {"role": "assistant", "content": "<think>"}
    assert "rg:chain_sum" in data.preset_names()


def test_an_unknown_task_is_refused_with_some_that_exist():
    with pytest.raises(data.DatasetError, match="reasoning-gym has no task 'no_such_task'; tasks include"):
        data.load_rows(DataConfig(preset="rg:no_such_task"))


def test_the_tasks_own_scorer_is_the_reward_and_the_demonstrations_score_full_marks():
    rows = data.load_rows(DataConfig(preset="rg:basic_arithmetic", task_size=4))
    demonstrate = sft.demonstration_source(DataConfig(preset="rg:basic_arithmetic"), rows)
    completions = [demonstrate(row, None) for row in rows] + [" hmm</think>\n<answer>not a number</answer>", " no tags"]
    examples = [data.example_of(row, DataConfig(preset="rg:basic_arithmetic")) for row in rows] + \
        [data.example_of(rows[0], DataConfig(preset="rg:basic_arithmetic"))] * 2
    runtime = RewardRuntime(reasoning_gym.reward_source())
    try:
        scores = runtime.score(["p"] * len(completions), completions, examples)
    finally:
        runtime.close()
    assert scores.per_function["task_score"] == [1.0] * 4 + [0.0, 0.0] and not scores.errors
    assert scores.per_function["answer_tags"] == [1.0] * 5 + [0.0]


@pytest.mark.slow
def test_two_steps_on_a_task_scored_by_its_scorer(tmp_path, tiny_model_dir):
    config = preset_config("rg:chain_sum").with_overrides([
        f"model.name_or_path={tiny_model_dir}", "data.task_size=16", "schedule.max_steps=2", "optim.prompts_per_step=1",
        "sampling.num_generations=2", "sampling.max_completion_length=8", "grpo.dynamic_sampling=false"])
    run_dir = train(config, tmp_path / "run", progress=False)
    assert read_status(run_dir)["state"] == "finished"
    assert {"rewards/task_score/mean", "rewards/answer_tags/mean"} <= set(read_metrics(run_dir).columns)
    group = read_rollouts(run_dir, 1)["groups"][0]
    assert group["example"]["task"] == "chain_sum" and len(group["rewards"]["task_score"]) == 2
