"""Worked answers for the SFT warm start: the solver's next guess, explained from the feedback.

The guess is the entropy solver's choice among the words that still fit the feedback. The
unrestricted solver sometimes plays a probe word that cannot be the secret but splits the
candidates better; a small model cannot work out such probes, and a probe never wins, so the
demonstrations only ever show guesses that follow from the feedback.

A demonstration is the text a model should write after the pre-filled
"Let me solve this step by step.\\n<think>": a few plain sentences that read the feedback
(letters confirmed in place, letters present elsewhere, letters ruled out, how many words still
fit), then `</think>`, a newline and `<guess> WORD </guess>`, the course's format exactly, so the
format reward gives it 1.0. The reasoning is kept to a few dozen tokens: long demonstrations
would teach the model to write long answers, and every token costs generation time on a CPU.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence

from rft.wordle.game import ABSENT, CORRECT, PRESENT, candidates, expected_information, parse_feedback, solver_guess

NAMED_CANDIDATES = 3  # candidates named in the text when several remain


def demonstration(past_guess_history: Sequence[Sequence[str]]) -> str:
    """The completion that reasons from `past_guess_history` to the solver's next guess."""
    history = [(guess, feedback_text) for guess, feedback_text in past_guess_history]
    guess = demonstrated_guess(history)
    return f" {reasoning(history, guess)}\n</think>\n<guess> {guess} </guess>"


def demonstrated_guess(history: Sequence[tuple[str, str]]) -> str:
    """The solver's guess when it could be the secret, else the most informative word that could."""
    guess = solver_guess(history)
    remaining = candidates(history)
    if not history or guess in remaining:
        return guess
    return max(remaining, key=lambda word: expected_information(word, remaining))


def demonstration_for_row(row: dict) -> str:
    """The demonstration for a row of the Wordle dataset (its `past_guess_history` column)."""
    return demonstration(ast.literal_eval(row["past_guess_history"]))


def reasoning(history: Sequence[tuple[str, str]], guess: str) -> str:
    if not history:
        return (f"No feedback yet, so I start with a word of common, different letters. "
                f"{guess} tests {', '.join(guess)}.")
    confirmed, misplaced, ruled_out = read_feedback(history)
    sentences = []
    if confirmed:
        places = ", ".join(f"{letter} at {position + 1}" for position, letter in confirmed)
        sentences.append(f"Confirmed: {places}.")
    if misplaced:
        sentences.append("In the word but misplaced: " + ", ".join(
            f"{letter} (not at {', '.join(str(p + 1) for p in positions)})" for letter, positions in misplaced) + ".")
    if ruled_out:
        sentences.append(f"Ruled out: {', '.join(ruled_out)}.")
    remaining = candidates(history)
    if len(remaining) == 1:
        sentences.append(f"Only {guess} fits all the feedback.")
    elif len(remaining) <= NAMED_CANDIDATES:
        sentences.append(f"{len(remaining)} words fit: {', '.join(remaining)}. I try {guess}.")
    else:
        sentences.append(f"{len(remaining)} words still fit, such as {', '.join(remaining[:NAMED_CANDIDATES])}. "
                         f"{guess} fits and tells the others apart best.")
    return " ".join(sentences)


Misplaced = list[tuple[str, list[int]]]  # (letter, the positions it is known not to be at)


def read_feedback(history: Sequence[tuple[str, str]]) -> tuple[list[tuple[int, str]], Misplaced, list[str]]:
    """What the feedback says, in the order a reader lists it:
    (position, letter) confirmed, (letter, positions it is not at) misplaced, letters ruled out.

    A letter marked x is ruled out only when no other mark shows it in the word: a repeated
    letter can be marked x for its extra copy and ✓ or - for the first.
    """
    confirmed: dict[int, str] = {}
    misplaced: dict[str, list[int]] = {}
    marked_absent: list[str] = []
    for guess, feedback_text in history:
        letters, symbols = parse_feedback(feedback_text)
        for position, (letter, symbol) in enumerate(zip(letters, symbols)):
            if symbol == CORRECT:
                confirmed[position] = letter
            elif symbol == PRESENT:
                positions = misplaced.setdefault(letter, [])
                if position not in positions:
                    positions.append(position)
            elif symbol == ABSENT and letter not in marked_absent:
                marked_absent.append(letter)
    in_word = set(confirmed.values()) | set(misplaced)
    still_misplaced = [(letter, sorted(positions)) for letter, positions in misplaced.items()
                       if letter not in confirmed.values()]
    ruled_out = [letter for letter in marked_absent if letter not in in_word]
    return sorted(confirmed.items()), still_misplaced, ruled_out
