"""Reward functions for Wordle, as in the Reinforcement Fine-Tuning course.

Each reward function takes (prompt, completion, example) and returns a float:
- `prompt` is the conversation the model saw,
- `completion` is what the model wrote after the pre-filled "Let me solve this step by step.\n<think>",
  so every function scores "<think>" + completion,
- `example` holds the dataset row's other columns as strings: `secret`, `past_guess_history` (a
  Python list of [guess, feedback] pairs, written as text) and `word_list` (a file of allowed
  words, one a line).

Feedback marks each letter of a guess: ✓ right letter in the right place, - letter in the word but
elsewhere, x letter not in the word. It is shown as `S(-) T(x) O(x) R(-) M(x)`.

The functions whose names start with "_" are helpers, not rewards. This file runs on its own
(standard library only), so it can be edited and run in the dashboard's reward editor.
"""

import ast
import functools
import math
import re

CORRECT, PRESENT, ABSENT = "✓", "-", "x"

# The whole text must be: one <think> block, exactly one newline, the <guess> block, nothing after.
FORMAT_PATTERN = r"^<think>\s*([^<]*(?:<(?!/?think>)[^<]*)*)\s*</think>\n<guess>\s*([\s\S]*?)\s*</guess>$"
# How the game reads the guess that is played; the other rewards score that same guess.
GUESS_PATTERN = r"<guess>\s*(.*?)\s*</guess>"


def output_format_check(prompt, completion, example) -> float:
    """1.0 for a well-formed answer with an allowed word; partial credit on the way there."""
    try:
        match = re.search(FORMAT_PATTERN, "<think>" + completion)
        if match is None:
            return 0.0
        guess = match.group(2).strip().upper()
        if len(guess) != 5:
            return 0.1
        if guess not in _read_word_list(example["word_list"]):
            return 0.5
        return 1.0
    except Exception:
        return 0.0


def uses_previous_feedback(prompt, completion, example) -> float:
    """Rewards a guess that keeps what earlier feedback revealed and avoids what it ruled out.

    Each letter of the guess scores by the first rule that applies, and the five scores add up:
    - kept where it was marked ✓: +0.2
    - a letter marked - placed at a position not tried yet: +0.1
    - a letter marked - placed again where it was marked -: -0.2
    - a letter marked x: -0.5
    - anything else (a letter not tried yet): +0.05
    Range -2.5 to +1.0; 0.1 when there is no feedback yet.
    """
    try:
        guess = _played_guess(completion)
        if guess is None or len(guess) != 5:
            return 0.0
        past_guesses = ast.literal_eval(example["past_guess_history"])
        if not past_guesses:
            return 0.1
        correct_positions, present_wrong_positions, absent_letters = {}, {}, set()
        for _, feedback_text in past_guesses:
            letters, symbols = _parse_feedback(feedback_text)
            for position, (letter, symbol) in enumerate(zip(letters, symbols)):
                if symbol == CORRECT:
                    correct_positions.setdefault(letter, set()).add(position)
                elif symbol == PRESENT:
                    present_wrong_positions.setdefault(letter, set()).add(position)
                else:
                    absent_letters.add(letter)
        score = 0.0
        for position, letter in enumerate(guess):
            if position in correct_positions.get(letter, ()):
                score += 0.2
            elif letter in present_wrong_positions and position not in present_wrong_positions[letter]:
                score += 0.1
            elif letter in present_wrong_positions:
                score -= 0.2
            elif letter in absent_letters:
                score -= 0.5
            else:
                score += 0.05
        return round(score, 2)  # the rules move in steps of 0.05; this drops float noise
    except Exception:
        return 0.0


def guess_value(prompt, completion, example) -> float:
    """How much the guess narrows down the secret: expected information gain, from 0 to 1.

    The candidates are the allowed words that would have produced every feedback seen so far.
    With N candidates the uncertainty is log2(N) bits; the guess splits the candidates into
    groups by the feedback it would get, and what is left on average is sum(|g|/N * log2|g|).
    The reward is the fraction of the uncertainty the guess is expected to remove.
    """
    try:
        guess = _played_guess(completion)
        if guess is None or len(guess) != 5 or guess not in _read_word_list(example["word_list"]):
            return 0.0
        past_feedback = tuple(feedback for _, feedback in ast.literal_eval(example["past_guess_history"]))
        candidates = _consistent_words(_read_word_list(example["word_list"]), past_feedback)
        if len(candidates) <= 1:
            return 0.0
        return _expected_information(guess, candidates) / math.log2(len(candidates))
    except Exception:
        return 0.0


def fits_feedback(prompt, completion, example) -> float:
    """1.0 for an allowed word that could still be the secret, given every feedback so far; else 0.

    The guard against the reward hack the course warns about: output_format_check pays 1.0 for
    any allowed word, so a model can collect it by replaying one safe word (`stain`) whatever the
    feedback says. This pays only for guesses that use the feedback. The wordle preset weighs it 0
    (the course's three rewards decide; this one is logged, so the hack shows in the charts);
    the wordle-guarded preset weighs it 1.
    """
    try:
        guess = _played_guess(completion)
        words = _read_word_list(example["word_list"])
        if guess is None or guess not in words:
            return 0.0
        past_feedback = tuple(feedback for _, feedback in ast.literal_eval(example["past_guess_history"]))
        return 1.0 if guess in _consistent_words(words, past_feedback) else 0.0
    except Exception:
        return 0.0


def _feedback_symbols(guess: str, secret: str) -> str:
    """The feedback symbols for `guess` against `secret`, e.g. "-xx-x" for STORM against BRISK.

    Repeated letters: exact matches are marked first; then, left to right, a letter is marked
    present only while the secret still has an unmatched copy of it, so LLAMA against ALLEY
    gives L(-) L(✓) A(-) M(x) A(x).
    """
    symbols = [ABSENT] * len(guess)
    unmatched_in_secret = {}
    for position, (guess_letter, secret_letter) in enumerate(zip(guess, secret)):
        if guess_letter == secret_letter:
            symbols[position] = CORRECT
        else:
            unmatched_in_secret[secret_letter] = unmatched_in_secret.get(secret_letter, 0) + 1
    for position, guess_letter in enumerate(guess):
        if symbols[position] == ABSENT and unmatched_in_secret.get(guess_letter, 0) > 0:
            symbols[position] = PRESENT
            unmatched_in_secret[guess_letter] -= 1
    return "".join(symbols)


def _render_feedback(guess: str, symbols: str) -> str:
    """"STORM", "-xx-x" -> "S(-) T(x) O(x) R(-) M(x)"."""
    return " ".join(f"{letter}({symbol})" for letter, symbol in zip(guess, symbols))


def _parse_feedback(feedback_text: str) -> tuple[str, str]:
    """"S(-) T(x) O(x) R(-) M(x)" -> ("STORM", "-xx-x"); ValueError when it is not feedback."""
    marks = feedback_text.split()
    if not marks or any(re.fullmatch(r"[A-Z]\([✓x-]\)", mark) is None for mark in marks):
        raise ValueError(f"not Wordle feedback: {feedback_text!r}")
    return "".join(mark[0] for mark in marks), "".join(mark[2] for mark in marks)


def _played_guess(completion: str):
    """The guess the game would play (upper case), or None when there is no <guess> block."""
    match = re.search(GUESS_PATTERN, "<think>" + completion)
    return match.group(1).upper() if match else None


def _expected_information(guess: str, candidates) -> float:
    """Bits the guess is expected to reveal when the secret is equally likely any candidate."""
    group_sizes = {}
    for candidate in candidates:
        pattern = _feedback_symbols(guess, candidate)
        group_sizes[pattern] = group_sizes.get(pattern, 0) + 1
    count = len(candidates)
    expected_remaining = sum(size / count * math.log2(size) for size in group_sizes.values())
    return math.log2(count) - expected_remaining


@functools.lru_cache(maxsize=8)
def _read_word_list(path: str) -> frozenset:
    with open(path, encoding="utf-8") as word_file:
        return frozenset(line.strip().upper() for line in word_file if line.strip())


@functools.lru_cache(maxsize=4096)
def _consistent_words(words: frozenset, past_feedback: tuple) -> tuple:
    """The words that, as the secret, would have produced every feedback in `past_feedback`.

    Built on the (cached) answer for the history one guess shorter, because the completions of
    one prompt share its history and histories share their beginnings.
    """
    if not past_feedback:
        return tuple(sorted(words))
    earlier_candidates = _consistent_words(words, past_feedback[:-1])
    past_guess, symbols = _parse_feedback(past_feedback[-1])
    return tuple(word for word in earlier_candidates if _feedback_symbols(past_guess, word) == symbols)
