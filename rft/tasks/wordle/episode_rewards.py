"""Reward functions for whole Wordle games (the wordle-game preset), scored per episode.

Each function takes (prompt, completion, example) as the course's do; in an episode `example`
also holds `episode`: its `replies` (one per guess, oldest first), `turns`, `truncated`. The
environment's own reward (1 for a win) is scored beside these as "environment".

The course's three rewards score one guess against the feedback before it; here each is averaged
over the game's guesses, every guess scored with the history it was made after (a history the
game rebuilds from the replies, invalid guesses included as turns without feedback).
"""

from rft.tasks.wordle.rewards import (
    _feedback_symbols,
    _played_guess,
    _read_word_list,
    _render_feedback,
)
from rft.tasks.wordle.rewards import guess_value as _guess_value
from rft.tasks.wordle.rewards import output_format_check as _output_format_check
from rft.tasks.wordle.rewards import uses_previous_feedback as _uses_previous_feedback


def guesses_used(prompt, completion, example) -> float:
    """For a win, 1.0 in one guess down to 1/6 in six (fewer guesses are better); 0 without a win."""
    states = _turn_states(example)
    if not states or states[-1][1] != example["secret"].upper():
        return 0.0
    return (7 - len(states)) / 6


def format_per_turn(prompt, completion, example) -> float:
    """The course's output_format_check, averaged over the game's replies."""
    return _mean_over_turns(_output_format_check, example)


def feedback_per_turn(prompt, completion, example) -> float:
    """The course's uses_previous_feedback, averaged over the game's replies."""
    return _mean_over_turns(_uses_previous_feedback, example)


def information_per_turn(prompt, completion, example) -> float:
    """The course's guess_value, averaged over the game's replies."""
    return _mean_over_turns(_guess_value, example)


def _mean_over_turns(course_reward, example) -> float:
    scores = [course_reward(prompt_text, reply, dict(example, past_guess_history=str(history)))
              for prompt_text, reply, history in _turns(example)]
    return sum(scores) / len(scores) if scores else 0.0


def _turns(example):
    """(prompt text, reply, history before it) for each guess: the course's rewards need no prompt."""
    history, turns = [], []
    for reply, guess in _turn_states(example):
        turns.append(("", reply, [list(pair) for pair in history]))
        if guess is not None:
            history.append((guess, _render_feedback(guess, _feedback_symbols(guess, example["secret"].upper()))))
    return turns


def _turn_states(example):
    """(reply, the allowed word it played or None) for each reply of the episode."""
    words = _read_word_list(example["word_list"])
    states = []
    for reply in example["episode"]["replies"]:
        guess = _played_guess(reply)
        states.append((reply, guess if guess is not None and len(guess) == 5 and guess in words else None))
    return states
