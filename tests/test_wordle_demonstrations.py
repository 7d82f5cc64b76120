"""SFT demonstrations for Wordle: the course's format, guesses that follow from the feedback."""

import ast
import re

import pytest

from rft.tasks.wordle.dataset import training_rows
from rft.tasks.wordle.demonstrations import (
    demonstrated_guess,
    demonstration,
    demonstration_for_row,
    one_token_words,
    read_feedback,
)
from rft.tasks.wordle.game import candidates, solver_guess
from rft.tasks.wordle.rewards import GUESS_PATTERN, guess_value, output_format_check, uses_previous_feedback


@pytest.fixture(scope="module")
def rows():
    return training_rows(num_secrets=40, seed=3)


def played(completion: str) -> str:
    """The guess as written (demonstrations write it in lower case)."""
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
        guess = played(demonstration_for_row(row)).upper()
        assert guess == demonstrated_guess(history)
        if history:
            assert guess in candidates(history)
        solver_agrees += guess == solver_guess(history)
    assert solver_agrees >= len(rows) // 2


def test_the_reasoning_reads_the_feedback_in_words():
    history = [("RAISE", "R(x) A(-) I(x) S(x) E(✓)")]
    text = demonstration(history)
    guess = played(text)
    assert guess == guess.lower()
    assert text == (" Confirmed: E at 5. In the word but misplaced: A (not at 2). Ruled out: R, I, S. "
                    f"A word that fits all this: {guess}.\n</think>\n<guess> {guess} </guess>")
    assert demonstration([]) == (" No feedback yet, so I start with a word of common, different letters: "
                                 "raise.\n</think>\n<guess> raise </guess>")


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
    assert text.endswith("A word that fits all this: quest.\n</think>\n<guess> quest </guess>")


def test_a_preferred_word_that_fits_is_chosen_over_the_solvers():
    history = [("RAISE", "R(x) A(-) I(x) S(x) E(x)")]
    solvers = demonstrated_guess(history)
    others = [word for word in candidates(history) if word != solvers]
    assert demonstrated_guess(history, preferred=lambda word: word in others) in others
    assert demonstrated_guess(history, preferred=lambda word: word == others[-1]) == others[-1]
    # No preferred word fits: the solver's choice stands; the opening never changes.
    assert demonstrated_guess(history, preferred=lambda word: False) == solvers
    assert demonstrated_guess([], preferred=lambda word: False) == "RAISE"


def test_one_token_words_are_allowed_words_the_tokenizer_writes_whole(bundled_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    words = one_token_words(tokenizer)
    assert {"RAISE", "COAST", "HOUSE"} <= words
    assert all(len(tokenizer(f" {word.lower()}", add_special_tokens=False).input_ids) == 1 for word in words)
    multi_token = [w for w in ("QUAFF", "XYLYL", "ZOPPA") if len(tokenizer(f" {w.lower()}", add_special_tokens=False).input_ids) > 1]
    assert multi_token and not set(multi_token) & words
    guesses = [played(demonstration_for_row(row, tokenizer)).upper() for row in training_rows(num_secrets=40, seed=3)]
    assert sum(guess in words for guess in guesses) > 0.8 * len(guesses)
