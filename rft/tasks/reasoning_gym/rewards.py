"""Reward functions for reasoning-gym tasks (`data.preset: rg:<task>`).

Each takes (prompt, completion, example) and returns a float:
- `completion` is what the model wrote after the pre-filled "<think>",
- `example` holds the row's other columns: `question`, `answer`, `metadata` (JSON text) and
  `task` (the reasoning-gym task name), which is what the task's own scorer needs.

This file runs on its own in the reward worker (reasoning-gym is installed with the app), so it
can be edited in the dashboard's reward editor.
"""

import json
import re

ANSWER_PATTERN = r"<answer>(.*?)</answer>"


def answer_tags(prompt, completion, example) -> float:
    """1.0 for reasoning closed by </think> and then one <answer> block ending the text; 0.5 for an
    <answer> block anywhere else; 0.0 without one."""
    if re.fullmatch(r"[^<]*</think>\s*<answer>[^<]*</answer>\s*", completion):
        return 1.0
    return 0.5 if re.search(ANSWER_PATTERN, completion, flags=re.DOTALL) else 0.0


def task_score(prompt, completion, example) -> float:
    """reasoning-gym's own scorer for the row's task on the last <answer> block: 1.0 for a right
    answer, partial credit where the task gives some, 0.0 without an answer."""
    import reasoning_gym

    answers = re.findall(ANSWER_PATTERN, completion, flags=re.DOTALL)
    if not answers:
        return 0.0
    entry = {"question": example["question"], "answer": example["answer"], "metadata": json.loads(example["metadata"])}
    return float(reasoning_gym.get_score_answer_fn(example["task"])(answers[-1].strip(), entry))
