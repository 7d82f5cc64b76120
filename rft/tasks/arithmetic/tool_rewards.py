"""Reward functions for arithmetic with a calculator (the arithmetic-tools preset), per episode.

Each takes (prompt, completion, example); `completion` is the model's last reply, and
`example["episode"]` the whole episode (its `messages`, `replies`, `turns`). `example` also holds
the row's `expression` and `answer`.
"""

from rft.tasks.arithmetic.rewards import _answer


def correct_answer(prompt, completion, example) -> float:
    """1.0 when the last reply's <answer> is the expression's value, else 0.0."""
    try:
        return 1.0 if _answer(completion) == int(str(example["answer"]).strip()) else 0.0
    except (KeyError, ValueError):
        return 0.0


def used_calculator(prompt, completion, example) -> float:
    """1.0 when the episode called the calculator at least once (logged: the preset weighs it 0)."""
    return 1.0 if any(m["role"] == "tool" for m in example["episode"]["messages"]) else 0.0
