"""Wordle: the rules, the word lists, which words still fit the feedback, and an entropy solver.

A history is a sequence of (guess, feedback) pairs, the feedback rendered as in the prompts:
`S(-) T(x) O(x) R(-) M(x)`. Secrets are drawn from the answer list; guesses may be any word of
the larger allowed list.
"""

from __future__ import annotations

import functools
import heapq
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

# The reward code must run on its own in the reward worker, so it holds the one implementation of
# the feedback rules and of expected information; the game, the solver and the UI use it from
# there, under the public names given here.
from rft.tasks.wordle.rewards import ABSENT, CORRECT, PRESENT
from rft.tasks.wordle.rewards import _consistent_words as consistent_words
from rft.tasks.wordle.rewards import _expected_information as expected_information
from rft.tasks.wordle.rewards import _feedback_symbols as feedback_symbols
from rft.tasks.wordle.rewards import _parse_feedback as parse_feedback
from rft.tasks.wordle.rewards import _render_feedback as render_feedback

__all__ = [
    "ABSENT", "CORRECT", "PRESENT", "WORD_LENGTH", "MAX_GUESSES", "ANSWERS_PATH", "ALLOWED_PATH", "OPENER",
    "answer_words", "allowed_words", "feedback", "feedback_symbols", "render_feedback", "parse_feedback",
    "candidates", "consistent_words", "expected_information", "solver_guess", "solve",
]

WORD_LENGTH = 5
MAX_GUESSES = 6
WORDS_DIR = Path(__file__).resolve().parents[3] / "assets" / "wordle"
ANSWERS_PATH = WORDS_DIR / "answers.txt"
ALLOWED_PATH = WORDS_DIR / "allowed.txt"

# The answer word that reveals the most about a secret drawn from the answer list (5.91 bits).
# Scoring every answer word as an opener takes about ten seconds, so it was computed once with
# max(answer_words(), key=lambda word: expected_information(word, answer_words())).
OPENER = "RAISE"
# Non-candidate guesses scored per decision: enough to split families like BATCH, CATCH,
# HATCH, LATCH, MATCH, PATCH, WATCH that would otherwise take one guess each.
PROBE_COUNT = 10

History = Sequence[tuple[str, str]]


@functools.cache
def answer_words() -> tuple[str, ...]:
    """The possible secrets: common words, sorted."""
    return tuple(_read_words(ANSWERS_PATH))


@functools.cache
def _answer_set() -> frozenset[str]:
    return frozenset(answer_words())


@functools.cache
def allowed_words() -> frozenset[str]:
    """Every word accepted as a guess (the answers included)."""
    return frozenset(_read_words(ALLOWED_PATH))


def _read_words(path: Path) -> list[str]:
    return [line.strip().upper() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def feedback(guess: str, secret: str) -> str:
    """The rendered feedback for `guess` against `secret`, e.g. `S(-) T(x) O(x) R(-) M(x)`."""
    return render_feedback(guess, feedback_symbols(guess, secret))


def candidates(history: History, words: frozenset[str] | None = None) -> tuple[str, ...]:
    """The words (the answer list by default) that fit every feedback in `history`, sorted."""
    past_feedback = tuple(feedback_text for _, feedback_text in history)
    return consistent_words(_answer_set() if words is None else words, past_feedback)


def solver_guess(history: History) -> str:
    """The solver's next guess: the word expected to reveal the most about the secret.

    It scores the remaining candidates plus a few probe words (scoring every allowed word
    would take seconds per decision). Decisions are cached, so games that share an opening
    cost nothing twice: all 2,315 answer games take about 2 s, average 3.50 guesses, and
    every one is won within six.
    """
    return _best_guess(tuple(feedback_text for _, feedback_text in history))


@functools.lru_cache(maxsize=65536)
def _best_guess(past_feedback: tuple[str, ...]) -> str:
    if not past_feedback:
        return OPENER
    remaining = consistent_words(_answer_set(), past_feedback)
    if not remaining:
        # A secret from outside the answer list (a player's own word): fall back to every word.
        remaining = consistent_words(allowed_words(), past_feedback)
    if not remaining:
        raise ValueError(f"no allowed word fits this feedback: {list(past_feedback)}")
    if len(remaining) <= 2:
        return remaining[0]
    # Candidates come first so that, on a tie, the guess that might win right now is chosen.
    still_possible = frozenset(remaining)
    guesses = list(remaining) + [word for word in _probe_words(remaining) if word not in still_possible]
    return max(guesses, key=lambda word: expected_information(word, remaining))


def _probe_words(remaining: Sequence[str]) -> list[str]:
    """Answer words that test the most letters still in doubt among the remaining candidates.

    A letter found in half the candidates splits them best; one found in all or none tells
    nothing. Only these few probes are scored exactly, beside the candidates themselves.
    """
    words_with_letter = Counter(letter for word in remaining for letter in set(word))
    doubt = {letter: min(count, len(remaining) - count) for letter, count in words_with_letter.items()}
    return heapq.nlargest(PROBE_COUNT, answer_words(), key=lambda word: sum(doubt.get(letter, 0) for letter in set(word)))


def solve(secret: str) -> list[tuple[str, str]]:
    """The solver's game against `secret`: its (guess, feedback) pairs, at most six."""
    history: list[tuple[str, str]] = []
    while len(history) < MAX_GUESSES:
        guess = solver_guess(history)
        history.append((guess, feedback(guess, secret.upper())))
        if guess == secret.upper():
            break
    return history
