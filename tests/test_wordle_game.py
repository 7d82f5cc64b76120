"""Wordle rules, word lists, candidate filtering and the entropy solver."""

import random
import re

import pytest

from rft.tasks.wordle.game import (
    OPENER,
    allowed_words,
    answer_words,
    candidates,
    expected_information,
    feedback,
    parse_feedback,
    render_feedback,
    solve,
    solver_guess,
)


@pytest.mark.parametrize(
    ("secret", "guess", "expected"),
    [
        ("BRISK", "STORM", "S(-) T(x) O(x) R(-) M(x)"),  # the course's worked example
        ("BRISK", "BRAVE", "B(✓) R(✓) A(x) V(x) E(x)"),
        ("BRISK", "BRISK", "B(✓) R(✓) I(✓) S(✓) K(✓)"),
        # One L is matched exactly, the other is present; only one A is left for two A's.
        ("ALLEY", "LLAMA", "L(-) L(✓) A(-) M(x) A(x)"),
        # The exact B is matched first, so the other B still finds the secret's second B.
        ("ABBEY", "BABES", "B(-) A(-) B(✓) E(✓) S(x)"),
        # The exact E uses the secret's only E: the other two E's are absent.
        ("CRANE", "EERIE", "E(x) E(x) R(-) I(x) E(✓)"),
        # Two E's in the secret, neither in place: both E's of the guess are present.
        ("SPEED", "ERASE", "E(-) R(x) A(x) S(-) E(-)"),
        # Three O's guessed, two in the secret: the exact one first, then one present, one absent.
        ("MOTOR", "OOZZO", "O(-) O(✓) Z(x) Z(x) O(x)"),
    ],
)
def test_feedback_is_duplicate_aware(secret, guess, expected):
    assert feedback(guess, secret) == expected


def test_render_and_parse_round_trip():
    rendered = render_feedback("LLAMA", "-✓-xx")
    assert rendered == "L(-) L(✓) A(-) M(x) A(x)"
    assert parse_feedback(rendered) == ("LLAMA", "-✓-xx")
    for secret, guess in [("ALLEY", "LLAMA"), ("ABBEY", "BABES"), ("CRANE", "CRANE")]:
        letters, symbols = parse_feedback(feedback(guess, secret))
        assert letters == guess
        assert render_feedback(letters, symbols) == feedback(guess, secret)


@pytest.mark.parametrize("text", ["", "STORM", "S(?) T(x) O(x) R(-) M(x)", "s(-) t(x)", "S(-)T(x)"])
def test_parse_rejects_text_that_is_not_feedback(text):
    with pytest.raises(ValueError):
        parse_feedback(text)


def test_word_lists_are_upper_case_five_letter_words_and_answers_are_allowed():
    answers, allowed = answer_words(), allowed_words()
    assert 2000 <= len(answers) <= 2600
    assert len(allowed) >= 12000
    assert all(re.fullmatch("[A-Z]{5}", word) for word in allowed)
    assert set(answers) <= allowed
    assert list(answers) == sorted(set(answers))


def test_candidates_keep_exactly_the_words_that_fit_every_feedback():
    history = [("STORM", "S(-) T(x) O(x) R(-) M(x)"), ("BRAVE", "B(✓) R(✓) A(x) V(x) E(x)")]
    # BRINK has no S; CRISP fits STORM's feedback but not BRAVE's (its B would be x).
    assert candidates(history, frozenset({"BRISK", "BRINK", "CRISP"})) == ("BRISK",)
    remaining = candidates(history)
    assert "BRISK" in remaining
    assert all(feedback(guess, word) == shown for word in remaining for guess, shown in history)
    assert candidates([], frozenset({"ZEBRA", "APPLE"})) == ("APPLE", "ZEBRA")


def test_opener_reveals_more_than_other_answer_words():
    answers = answer_words()
    others = random.Random(1).sample(answers, 30)
    opener_bits = expected_information(OPENER, answers)
    assert all(opener_bits >= expected_information(word, answers) for word in others)


def test_solver_wins_every_sampled_game_within_six_guesses():
    secrets = random.Random(0).sample(answer_words(), 30)
    games = [solve(secret) for secret in secrets]
    for secret, game in zip(secrets, games):
        assert game[-1] == (secret, feedback(secret, secret))
        assert len(game) <= 6
        assert all(guess in allowed_words() for guess, _ in game)
    assert sum(len(game) for game in games) / len(games) < 4.2


def test_solver_finds_a_secret_outside_the_answer_list():
    secret = "YEARS"  # allowed, but plurals are never answers: the solver widens its search
    assert secret in allowed_words() and secret not in answer_words()
    assert solve(secret)[-1][0] == secret


def test_solver_guess_follows_history():
    assert solver_guess([]) == OPENER
    history = [(OPENER, feedback(OPENER, "CRANE"))]
    next_guess = solver_guess(history)
    assert next_guess != OPENER
    assert "CRANE" in candidates(history)
