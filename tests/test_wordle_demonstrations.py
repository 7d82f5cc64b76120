"""SFT demonstrations for Wordle: the course's format, guesses that follow from the feedback."""

import ast
import re

import pytest

from rft.wordle.dataset import training_rows
from rft.wordle.demonstrations import demonstrated_guess, demonstration, demonstration_for_row, read_feedback
from rft.wordle.game import candidates, solver_guess
from rft.wordle.rewards import GUESS_PATTERN, guess_value, output_format_check, uses_previous_feedback


@pytest.fixture(scope="module")
def rows():
    return training_rows(num_secrets=40, seed=3)


def played(completion: str) -> str:
    return re.search(GUESS_PATTERN, "<think>" + completion).group(1)


def test_every_demonstration_passes_the_format_check_with_an_allowed_word(rows):
    for row in rows:
        completion = demonstration_for_row(row)
        assert output_format_check(row["prompt"], completion, row) == 1.0, completion
        assert guess_value(row["prompt"], completion, row) >= 0.0
        assert uses_previous_feedback(row["prompt"], completion, row) > 0.0, completion


def test_the_guess_is_the_solvers_or_a_word_that_fits_the_feedback(rows):
    solver_agrees = 0
    for row in rows:
        history = [tuple(pair) for pair in ast.literal_eval(row["past_guess_history"])]
        guess = played(demonstration_for_row(row))
        assert guess == demonstrated_guess(history)
        if history:
            assert guess in candidates(history)
        solver_agrees += guess == solver_guess(history)
    assert solver_agrees >= len(rows) // 2


def test_the_reasoning_reads_the_feedback_in_words():
    history = [("RAISE", "R(x) A(-) I(x) S(x) E(✓)")]
    text = demonstration(history)
    assert text.startswith(" Confirmed: E at 5. In the word but misplaced: A (not at 2). Ruled out: R, I, S.")
    assert text.endswith(f"\n</think>\n<guess> {played(text)} </guess>")
    assert demonstration([]) == (" No feedback yet, so I start with a word of common, different letters. "
                                 "RAISE tests R, A, I, S, E.\n</think>\n<guess> RAISE </guess>")


def test_a_repeated_letter_marked_absent_once_is_not_ruled_out():
    # SPEED against ABIDE: the first E is present elsewhere, the second gets x for lack of a copy.
    confirmed, misplaced, ruled_out = read_feedback([("SPEED", "S(x) P(x) E(-) E(x) D(-)")])
    assert confirmed == []
    assert misplaced == [("E", [2]), ("D", [4])]
    assert ruled_out == ["S", "P"]


def test_one_candidate_left_is_named_and_played():
    history = [("RAISE", "R(x) A(x) I(x) S(✓) E(-)"), ("BUTCH", "B(x) U(✓) T(-) C(x) H(x)"),
               ("GUEST", "G(x) U(✓) E(✓) S(✓) T(✓)")]
    text = demonstration(history)
    assert "Only QUEST fits all the feedback." in text and played(text) == "QUEST"
