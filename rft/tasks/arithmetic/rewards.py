"""Reward functions for the arithmetic task: the answer's format, and whether it is right.

Each reward function takes (prompt, completion, example) and returns a float:
- `completion` is what the model wrote after the pre-filled "<think>", so every function scores
  "<think>" + completion,
- `example` holds the dataset row's other columns: `expression` and `answer` (an integer,
  possibly written as text).

The functions whose names start with "_" are helpers, not rewards. This file runs on its own
(standard library only), so it can be edited and run in the dashboard's reward editor.
"""

import re

# One <think> block, exactly one newline, an <answer> block holding an integer, nothing after it.
FORMAT_PATTERN = r"^<think>[^<]*</think>\n<answer>\s*-?\d+\s*</answer>$"
# How the answer is read, wherever it is; the first <answer> block counts.
ANSWER_PATTERN = r"<answer>\s*(-?\d+)\s*</answer>"


def answer_format(prompt, completion, example) -> float:
    """1.0 for reasoning in <think> then only an integer in <answer>; 0.5 for an integer answer in
    a looser shape (text after it, no reasoning block); 0.0 without one."""
    text = "<think>" + completion
    if re.fullmatch(FORMAT_PATTERN, text):
        return 1.0
    return 0.5 if _answer(completion) is not None else 0.0


def format_progress(prompt, completion, example) -> float:
    """A quarter for each part of the format that is there: "</think>"; "<answer>"; an integer right
    after it; "</answer>" right after that. A model never shown the format (GRPO without the SFT
    warm start) earns some of it by chance, so its groups differ and it learns from them;
    answer_format pays nothing until the whole shape appears. The arithmetic preset weighs this 0
    (logged only), arithmetic-zero weighs it 1."""
    earned = 0.25 if "</think>" in completion else 0.0
    answer_start = completion.find("<answer>")
    if answer_start < 0:
        return earned
    after = completion[answer_start + len("<answer>"):]
    number = re.match(r"\s*-?\d+", after)
    if number is None:
        return earned + 0.25
    closed = re.match(r"\s*</answer>", after[number.end():])
    return earned + (0.75 if closed else 0.5)


def correct_answer(prompt, completion, example) -> float:
    """1.0 when the integer in the first <answer> block is the expression's value, else 0.0."""
    try:
        return 1.0 if _answer(completion) == int(str(example["answer"]).strip()) else 0.0
    except (KeyError, ValueError):
        return 0.0


def _answer(completion: str):
    """The integer in the first <answer> block, or None."""
    match = re.search(ANSWER_PATTERN, completion)
    return int(match.group(1)) if match else None
