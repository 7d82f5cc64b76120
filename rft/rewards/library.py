"""Built-in reward functions for the dashboard's preset menu.

The menu inserts a function's source text into the user's code box, so each function here is
self-contained (imports inside; the standard library, or a package in requirements.txt), uses the per-sample signature
(prompt, completion, example) unless it needs the completion's tokens (then the batched one, which
receives `completion_ids`), and keeps its tunable constants in its own body.
"""

from __future__ import annotations

import inspect


def format_check(prompt, completion, example):
    """1.0 when the completion is <think>...</think> then <answer>...</answer>, else 0.0."""
    import re

    # Edit to require another format; DOTALL lets the reasoning span several lines.
    PATTERN = r"^\s*<think>.+?</think>\s*<answer>.+?</answer>\s*$"
    return 1.0 if re.match(PATTERN, completion, flags=re.DOTALL) else 0.0


def exact_match(prompt, completion, example):
    """1.0 when the answer equals example["answer"], ignoring case and surrounding spaces."""
    import re

    # The last <answer> tag is the final answer; without tags the whole completion is the answer.
    tagged = re.findall(r"<answer>(.*?)</answer>", completion, flags=re.DOTALL)
    answer = tagged[-1] if tagged else completion
    expected = example["answer"]
    if expected is None:
        return None  # not applicable: this row has no reference answer
    return 1.0 if answer.strip().lower() == str(expected).strip().lower() else 0.0


def numeric_match(prompt, completion, example):
    """1.0 when the last number in the answer equals example["answer"] within a tolerance."""
    import re

    TOLERANCE = 1e-6  # absolute, or relative to the expected value when that exceeds 1
    tagged = re.findall(r"<answer>(.*?)</answer>", completion, flags=re.DOTALL)
    text = tagged[-1] if tagged else completion
    numbers = re.findall(r"-?\d+(?:,\d{3})*(?:\.\d+)?", text)
    expected = example["answer"]
    if expected is None:
        return None  # not applicable: this row has no reference answer
    if not numbers:
        return 0.0
    found = float(numbers[-1].replace(",", ""))
    expected = float(str(expected).replace(",", ""))
    return 1.0 if abs(found - expected) <= TOLERANCE * max(1.0, abs(expected)) else 0.0


def math_verified(prompt, completion, example):
    """1.0 when the answer equals example["answer"] mathematically (Hugging Face's math-verify: 1/2 = 0.5,
    LaTeX, \\boxed{}, equivalent expressions), else 0.0."""
    import re

    from math_verify import parse, verify

    tagged = re.findall(r"<answer>(.*?)</answer>", completion, flags=re.DOTALL)
    answer = tagged[-1] if tagged else completion
    expected = example["answer"]
    if expected is None:
        return None  # not applicable: this row has no reference answer
    # A bare number or expression parses as it is; wrapping it in $...$ lets LaTeX parse too.
    gold = parse(str(expected)) or parse(f"${expected}$")
    found = parse(answer) or parse(f"${answer.strip()}$")
    return 1.0 if gold and found and verify(gold, found) else 0.0


def length_penalty(prompt, completion, example):
    """0 up to 1024 characters, then -1 per 1024 more, down to -10: long rambling stops paying."""
    TARGET_CHARS = 1024
    length = len(completion)
    if length <= TARGET_CHARS:
        return 0.0
    return max((TARGET_CHARS - length) / TARGET_CHARS, -10.0)


def repetition_penalty(prompt, completion, example):
    """0 when no word n-gram repeats, towards -1 as the completion repeats itself."""
    N = 3  # n-gram length in words
    words = completion.lower().split()
    ngrams = [tuple(words[start:start + N]) for start in range(len(words) - N + 1)]
    if not ngrams:
        return 0.0
    return len(set(ngrams)) / len(ngrams) - 1.0


def soft_overlong_punishment(completions, completion_ids=None, **kwargs):
    """DAPO's soft overlong punishment: 0 up to MAX_TOKENS - BUFFER tokens, then down to -1 at MAX_TOKENS."""
    MAX_TOKENS = 64  # set to the run's "Max completion tokens" (sampling.max_completion_length)
    BUFFER = 16  # the soft zone before the limit; DAPO used 4096 of 20480
    if completion_ids is None:
        # Text alone cannot say how the model split it into tokens: the trainer passes the sampled
        # tokens, a preview of pasted text does not, so the penalty does not apply there.
        return [None] * len(completions)
    rewards = []
    for ids in completion_ids:
        over = len(ids) - (MAX_TOKENS - BUFFER)
        rewards.append(0.0 if over <= 0 else max(-over / BUFFER, -1.0))
    return rewards


LIBRARY: dict[str, str] = {
    function.__name__: inspect.getsource(function)
    for function in (format_check, exact_match, numeric_match, math_verified, length_penalty, repetition_penalty,
                     soft_overlong_punishment)
}


def library_source(name: str) -> str:
    """The source text of the built-in reward function `name`, ready to insert into the code box."""
    if name not in LIBRARY:
        raise ValueError(f"no built-in reward function {name!r}; choose one of {', '.join(LIBRARY)}")
    return LIBRARY[name]
