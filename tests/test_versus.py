"""Versus Wordle: the person's and the model's boards, refusals, the winner; the board's tiles."""

from __future__ import annotations

import random

import pytest

from rft.models import load_for_inference
from rft.tasks.wordle.dataset import held_out_secrets
from rft.tasks.wordle.play import Turn, play_turn
from rft.tasks.wordle.versus import MODEL, NOBODY, PERSON, TIE, InvalidGuess, VersusGame, random_secret, reasoning
from ui.play_tab import board_html


def model_turn(guess: str | None, secret: str) -> Turn:
    """A model turn as play_turn records it, without running a model."""
    from rft.tasks.wordle.game import allowed_words, feedback

    valid = guess is not None and guess in allowed_words()
    return Turn("prompt", f" thinking </think>\n<guess> {guess} </guess>", guess,
                feedback(guess, secret) if valid else None, {})


@pytest.mark.parametrize("text, message", [("", "letters only"), ("cr4ne", "letters only"), ("cranes", "5 letters"),
                                           ("xxxxx", "not in the word list")])
def test_invalid_guesses_are_refused_and_cost_no_turn(text, message):
    game = VersusGame("crane")
    with pytest.raises(InvalidGuess, match=message):
        game.play_person(text)
    assert game.person == [] and not game.model_to_play


def test_the_secret_must_be_a_word():
    with pytest.raises(InvalidGuess, match="secret"):
        VersusGame("zz")
    assert random_secret(random.Random(1)) in held_out_secrets()


def test_fewer_guesses_wins_and_the_game_ends_as_soon_as_that_is_settled():
    game = VersusGame("CRANE")
    assert game.play_person("stare") == "S(x) T(x) A(✓) R(-) E(✓)"
    assert game.model_to_play and game.winner is None
    game.record_model_turn(model_turn("NOTAWORD", "CRANE"))  # invalid: still uses the turn
    assert game.model.num_guesses == 1 and game.model.turns[0].invalid and not game.model_to_play
    game.play_person("crane")
    assert game.person_solved_in == 2 and game.winner is None  # the model may still tie
    game.record_model_turn(model_turn("CRANE", "CRANE"))
    assert game.winner == TIE and game.over
    with pytest.raises(InvalidGuess, match="over"):
        game.play_person("crane")

    quick_model = VersusGame("CRANE")
    quick_model.play_person("stare")
    quick_model.record_model_turn(model_turn("CRANE", "CRANE"))
    assert quick_model.winner == MODEL

    person_first = VersusGame("CRANE")
    person_first.play_person("crane")
    person_first.record_model_turn(model_turn("STARE", "CRANE"))
    assert person_first.winner == PERSON


def test_six_misses_each_means_nobody_wins():
    game = VersusGame("CRANE")
    for _ in range(6):
        game.play_person("stare")
        game.record_model_turn(model_turn(None, "CRANE"))
    assert game.winner == NOBODY and game.person_done and game.model_done


def test_a_full_game_against_the_tiny_model(tiny_model_dir):
    model, tokenizer = load_for_inference(str(tiny_model_dir), device="cpu")
    game = VersusGame("CRANE")
    for word in ("stare", "pound", "light", "mercy", "bigot", "fuzzy"):
        game.play_person(word)
        while game.model_to_play:
            game.record_model_turn(play_turn(model, tokenizer, game.secret, game.model.history, max_new_tokens=8))
    assert len(game.person) == 6 and game.model.num_guesses == 6
    assert game.winner == NOBODY  # random weights write no valid guess; six turns are used up anyway


def test_reasoning_is_the_think_text():
    assert reasoning(" First, vowels.\n</think>\n<guess> CRANE </guess>") == "First, vowels."
    assert reasoning(" never closed") == "never closed"


def test_the_board_shows_tiles_in_feedback_colours_and_invalid_rows():
    page = board_html([("STARE", "S(x) T(x) A(✓) R(-) E(✓)"), ("<B>", None)])
    assert page.count('class="tile tile-correct"') == 2 and page.count('class="tile tile-present"') == 1
    assert page.count('class="tile tile-absent"') == 2
    assert "&lt;B&gt;</span> invalid" in page  # escaped, and marked invalid
    assert page.count("tile-empty") == 4 * 5
