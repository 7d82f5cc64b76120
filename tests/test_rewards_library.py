"""The built-in reward functions, on values worked out by hand."""

import math

import pytest

from rft.rewards import LIBRARY, library_source
from rft.rewards import RewardRuntime
from rft.rewards.library import (exact_match, format_check, length_penalty, math_verified, numeric_match,
                                  repetition_penalty, soft_overlong_punishment)


@pytest.mark.parametrize(("completion", "expected"), [
    ("<think>2 + 2 is 4</think><answer>4</answer>", 1.0),
    ("<think>first line\nsecond line</think>\n<answer>4</answer>\n", 1.0),
    ("<answer>4</answer>", 0.0),
    ("<think>no answer</think>", 0.0),
    ("<answer>4</answer><think>backwards</think>", 0.0),
    ("<think>why</think><answer>4</answer> and then more text", 0.0),
    ("<think></think><answer>4</answer>", 0.0),
])
def test_format_check(completion, expected):
    assert format_check("prompt", completion, {}) == expected


@pytest.mark.parametrize(("completion", "answer", "expected"), [
    ("<answer> Paris </answer>", "paris", 1.0),
    (" PARIS \n", "Paris", 1.0),
    ("<answer>Lyon</answer>", "Paris", 0.0),
    ("<answer>Lyon</answer> no wait <answer>Paris</answer>", "Paris", 1.0),
    ("<answer>4</answer>", 4, 1.0),
    ("<answer>Paris</answer>", None, None),
])
def test_exact_match(completion, answer, expected):
    assert exact_match("prompt", completion, {"answer": answer}) == expected


@pytest.mark.parametrize(("completion", "answer", "expected"), [
    ("<answer>The total is 1,234.5 dollars</answer>", "1234.5", 1.0),
    ("First 3, then 7", 7, 1.0),
    ("First 3, then 7", 3, 0.0),
    ("<answer>7</answer> but later I said 9", "7", 1.0),
    ("<answer>-2</answer>", "-2", 1.0),
    ("<answer>3.0000001</answer>", 3, 1.0),
    ("<answer>3.001</answer>", 3, 0.0),
    ("<answer>2000001</answer>", "2,000,000", 1.0),
    ("<answer>2000003</answer>", "2,000,000", 0.0),
    ("no number at all", "5", 0.0),
    ("<answer>5</answer>", None, None),
])
def test_numeric_match(completion, answer, expected):
    assert numeric_match("prompt", completion, {"answer": answer}) == expected


@pytest.mark.parametrize(("length", "expected"), [
    (0, 0.0),
    (1024, 0.0),
    (1025, -1 / 1024),
    (1536, -0.5),
    (2048, -1.0),
    (3072, -2.0),
    (11264, -10.0),
    (20000, -10.0),
])
def test_length_penalty(length, expected):
    assert length_penalty("prompt", "x" * length, {}) == expected


@pytest.mark.parametrize(("completion", "expected"), [
    ("the cat sat on the mat", 0.0),
    ("a b c a b c", 3 / 4 - 1),
    ("go go go go go", 1 / 3 - 1),
    ("Go go GO", 0.0),
    ("two words", 0.0),
    ("", 0.0),
])
def test_repetition_penalty(completion, expected):
    assert repetition_penalty("prompt", completion, {}) == pytest.approx(expected)


@pytest.mark.parametrize(("completion", "answer", "expected"), [
    ("<think>half</think><answer>0.5</answer>", "1/2", 1.0),
    ("<answer>\\frac{1}{2}</answer>", "0.5", 1.0),
    ("so the result is \\boxed{\\frac{3}{6}}", "\\frac{1}{2}", 1.0),
    ("<answer>(x+1)^2</answer>", "x^2+2x+1", 1.0),
    ("<answer>42</answer>", "42", 1.0),
    ("<answer>0.51</answer>", "1/2", 0.0),
    ("<answer>x^2+1</answer>", "x^2+2x+1", 0.0),
    ("<answer>no idea</answer>", "7", 0.0),
    ("<answer>7</answer>", None, None),
])
def test_math_verified(completion, answer, expected):
    assert math_verified("prompt", completion, {"answer": answer}) == expected


def test_math_verified_runs_in_the_reward_worker():
    runtime = RewardRuntime(library_source("math_verified"))
    try:
        scores = runtime.score(["p", "p"], ["<answer>0.5</answer>", "<answer>2</answer>"],
                               [{"answer": "1/2"}, {"answer": "1/2"}])
    finally:
        runtime.close()
    assert scores.per_function["math_verified"] == [1.0, 0.0] and not scores.errors


def test_library_sources_are_the_functions_text():
    assert list(LIBRARY) == ["format_check", "exact_match", "numeric_match", "math_verified", "length_penalty",
                             "repetition_penalty", "soft_overlong_punishment"]
    assert library_source("length_penalty").startswith("def length_penalty(prompt, completion, example):\n")
    assert "TARGET_CHARS = 1024" in library_source("length_penalty")
    with pytest.raises(ValueError, match="choose one of format_check, exact_match"):
        library_source("no_such_reward")


@pytest.mark.parametrize(("tokens", "expected"), [
    (0, 0.0), (48, 0.0),  # up to MAX_TOKENS - BUFFER = 64 - 16
    (49, -1 / 16), (56, -0.5), (64, -1.0),  # then linearly down to -1 at the limit
    (80, -1.0),  # never below
])
def test_soft_overlong_punishment(tokens, expected):
    assert soft_overlong_punishment(["text"], completion_ids=[list(range(tokens))]) == [pytest.approx(expected)]


def test_soft_overlong_punishment_counts_the_sampled_tokens_not_the_text():
    source = library_source("soft_overlong_punishment")
    with RewardRuntime(source) as runtime:
        # the same text, sampled as 10 and as 60 tokens
        scored = runtime.score(["p", "p"], ["same text", "same text"], [{}, {}], completion_ids=[[1] * 10, [1] * 60])
        assert scored.per_function["soft_overlong_punishment"] == [0.0, pytest.approx(-12 / 16)]
        # pasted text has no tokens: not applicable, rather than a guess from its characters
        previewed = runtime.score(["p"], ["x" * 5000], [{}])
        assert previewed.errors == {} and math.isnan(previewed.per_function["soft_overlong_punishment"][0])
