"""reasoning-gym's procedural tasks as built-in datasets: `data.preset: rg:<task>`, e.g. rg:chain_sum.

reasoning-gym (the open-source library of about a hundred verifiable task generators: arithmetic,
countdown, logic, puzzles, ciphers, ...) generates each task's questions from a seed, with their
answers and its own scorer. Here a task becomes:

- training rows: `data.task_size` questions generated with `data.task_seed`, each with the columns
  the scorer needs (`question`, `answer`, `metadata` as JSON, `task`);
- held-out rows: questions from a fixed seed of their own, any that also appear in training left
  out, for `data.eval_size` (the Evaluate panel and the periodic evaluation);
- a recipe: the prompt asks for reasoning in <think> and the answer in <answer>; the rewards are
  `answer_tags` (the format) and `task_score` (reasoning-gym's scorer for the task: 1.0 for a
  right answer, partial credit where the task gives some);
- demonstrations for the SFT warm start: the reference answer in the format (no worked reasoning:
  the generators give answers, not solutions).

The arithmetic preset stays next to it because its demonstrations show the worked steps, which a
small model learns from far more than from bare answers.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from rft.tasks import LIBRARY_PREFIX, Task, UnknownTask

HELD_OUT_SEED = 20250104  # fixed forever, so held-out evaluations stay comparable
# Offered in the Train tab's dataset list (any other reasoning-gym task works by name in the config).
SHOWN_TASKS = ("basic_arithmetic", "chain_sum", "countdown", "leg_counting", "letter_counting", "spell_backward",
               "gcd", "fraction_simplification", "word_sorting", "family_relationships")
SYSTEM_PROMPT = ("Answer the question. Reason step by step inside <think> </think>, then give only the final "
                 "answer inside <answer> </answer>.")
ASSISTANT_PREFIX = "<think>"
REWARDS_PATH = Path(__file__).resolve().parent / "rewards.py"


def task_name(preset: str) -> str:
    return preset.removeprefix(LIBRARY_PREFIX)


def available_tasks() -> list[str]:
    from reasoning_gym.factory import DATASETS

    return sorted(DATASETS)


def _entries(task: str, size: int, seed: int) -> list[dict]:
    import reasoning_gym

    try:
        return list(reasoning_gym.create_dataset(task, size=size, seed=seed))
    except (KeyError, ValueError) as exc:
        if task not in available_tasks():
            raise UnknownTask(f"reasoning-gym has no task {task!r}; tasks include "
                              f"{', '.join(SHOWN_TASKS)} ({len(available_tasks())} in all)") from None
        raise UnknownTask(f"reasoning-gym task {task!r} could not generate questions: {exc}") from None


def make_row(entry: dict, task: str) -> dict:
    return {
        "prompt": [{"role": "system", "content": SYSTEM_PROMPT},
                   {"role": "user", "content": entry["question"]},
                   {"role": "assistant", "content": ASSISTANT_PREFIX}],
        "question": entry["question"],
        "answer": str(entry["answer"]),
        "metadata": json.dumps(entry["metadata"], default=str),
        "task": task,
    }


def training_rows(preset: str, size: int, seed: int) -> list[dict]:
    """`size` questions of the task, generated with `seed`, none of them among the held-out ones' first 1,000."""
    task = task_name(preset)
    held_out = {entry["question"] for entry in _entries(task, 1000, HELD_OUT_SEED)}
    return [make_row(entry, task) for entry in _entries(task, size, seed) if entry["question"] not in held_out]


def held_out_rows(preset: str, count: int) -> list[dict]:
    """The first `count` held-out questions of the task: always the same."""
    task = task_name(preset)
    return [make_row(entry, task) for entry in _entries(task, count, HELD_OUT_SEED)]


def demonstration(row: dict, tokenizer=None) -> str:
    """The completion the SFT warm start shows for a row: the reference answer, in the format."""
    return f" The answer is {row['answer']}.\n</think>\n<answer>{row['answer']}</answer>"


def reward_source() -> str:
    return REWARDS_PATH.read_text(encoding="utf-8")


def recipe(preset: str):
    """The run config of a task: its rows, the format and scorer rewards, GRPO from the base model
    with the arithmetic preset's sampling, and DAPO's choices (no KL, token-level loss, dynamic sampling)."""
    from rft.config import (DataConfig, GRPOConfig, OptimConfig, RewardsConfig, RunConfig, SamplingConfig,
                            ScheduleConfig)

    return RunConfig(
        name=task_name(preset),
        data=DataConfig(preset=preset, max_prompt_length=512),
        rewards=RewardsConfig(source=reward_source()),
        sampling=SamplingConfig(num_generations=8, max_completion_length=128, temperature=1.0),
        grpo=GRPOConfig(beta=0.0, loss_type="dapo", dynamic_sampling=True),
        optim=OptimConfig(learning_rate=3e-4, prompts_per_step=4),
        schedule=ScheduleConfig(max_steps=30, save_every=10),
    )


def task(preset: str) -> Task:
    """The task of rg:<name>: its questions, held-out questions, recipe and demonstrations."""
    return Task(preset, rows=lambda data: training_rows(preset, data.task_size, data.task_seed),
                held_out_rows=lambda data, count: held_out_rows(preset, count),
                recipe=functools.partial(recipe, preset), demonstration=demonstration)
