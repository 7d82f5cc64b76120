"""Worked answers for the SFT warm start: the solver's next guess, explained from the feedback.

The guess is the entropy solver's choice among the words that still fit the feedback. The
unrestricted solver sometimes plays a probe word that cannot be the secret but splits the
candidates better; a small model cannot work out such probes, and a probe never wins, so the
demonstrations only ever show guesses that follow from the feedback.

Two choices make the guesses learnable by a small model:
- The guess is written in lower case. Tokenizers learn words in lower case: "coast" is one
  token where "COAST" is two or three fragments, and a model that assembles fragments invents
  words (BRAISE, CLEEP); writing whole words it knows, it picks real ones. The game and the
  rewards read guesses in any case.
- Among the words that fit, those the model's tokenizer writes as one token are preferred
  (about 2,000 of the 12,400 allowed words for SmolLM2). A model then learns to pick one known
  word, and such a word has five letters; a word spelled over several tokens can stop a token
  early or late. When no such word fits, the best word that fits is shown all the same.

A demonstration is the text a model should write after the pre-filled
"Let me solve this step by step.\\n<think>": a few plain sentences that read the feedback
(letters confirmed in place, letters present elsewhere, letters ruled out), then `</think>`, a
newline and `<guess> word </guess>`, the course's format exactly, so the format reward gives it
1.0. The reasoning is kept to a few dozen tokens: long demonstrations would teach the model to
write long answers, and every token costs generation time on a CPU. It names no candidate words:
a small model cannot know them and copies whatever it invents there into its guess.
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Callable, Sequence

from rft.tasks.wordle.game import ABSENT, CORRECT, PRESENT, allowed_words, candidates, expected_information, parse_feedback, solver_guess

WordFilter = Callable[[str], bool]  # is this (upper-case) word one the model writes easily


def demonstration(past_guess_history: Sequence[Sequence[str]], preferred: WordFilter | None = None) -> str:
    """The completion that reasons from `past_guess_history` to the next guess."""
    history = [(guess, feedback_text) for guess, feedback_text in past_guess_history]
    guess = demonstrated_guess(history, preferred).lower()
    return f" {reasoning(history, guess)}\n</think>\n<guess> {guess} </guess>"


def demonstrated_guess(history: Sequence[tuple[str, str]], preferred: WordFilter | None = None) -> str:
    """The most informative of the `preferred` words that could be the secret, when any fits; else
    the solver's guess when it could be the secret, else the most informative word that could."""
    remaining = candidates(history)
    pool = [word for word in remaining if preferred(word)] if preferred and history else []
    if not pool:
        guess = solver_guess(history)
        if not history or guess in remaining:
            return guess
        pool = remaining
    return max(pool, key=lambda word: expected_information(word, remaining))


def demonstration_for_row(row: dict, tokenizer=None) -> str:
    """The demonstration for a row of the Wordle dataset (its `past_guess_history` column),
    preferring the words `tokenizer` writes as one token."""
    preferred = one_token_words(tokenizer).__contains__ if tokenizer is not None else None
    return demonstration(ast.literal_eval(row["past_guess_history"]), preferred)


def game_demonstration(row: dict, tokenizer=None) -> list[dict]:
    """The solver's whole game against the row's secret, as the conversation after the prompt: each
    reply a demonstration, each answer what the wordle-game environment says to it."""
    from rft.tasks.wordle.environment import WordleGame

    preferred = one_token_words(tokenizer).__contains__ if tokenizer is not None else None
    game = WordleGame()
    game.reset(row)
    conversation = []
    while True:
        reply = demonstration(game.history, preferred)
        conversation.append({"role": "assistant", "content": reply})
        answer = game.step(reply)
        if answer is None:
            return conversation
        conversation.append({"role": "user", "content": answer})


@functools.lru_cache(maxsize=4)
def one_token_words(tokenizer) -> frozenset[str]:
    """The allowed words (upper case) that `tokenizer` encodes as a single token, in lower case
    after a space, as they appear in `<guess> word </guess>`."""
    return frozenset(word for word in allowed_words()
                     if len(tokenizer(f" {word.lower()}", add_special_tokens=False).input_ids) == 1)


def reasoning(history: Sequence[tuple[str, str]], guess: str) -> str:
    if not history:
        return f"No feedback yet, so I start with a word of common, different letters: {guess}."
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
    sentences.append(f"A word that fits all this: {guess}.")
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
