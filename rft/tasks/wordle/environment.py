"""Wordle as an environment: the model plays a whole game, one guess a turn.

Each reply is read as the course reads a completion (the word in <guess> ... </guess>); the game
answers with that guess's feedback in the course's format, and the next turn begins. A reply
without an allowed 5-letter word costs a guess and is answered with what was wrong. The game ends
when the secret is found or after six guesses; reward() is 1 for a win, 0 otherwise.

This file is environment code: it runs on its own in the environment worker, so it imports only
the standard library and the course's reward code (which holds the one implementation of the
feedback rules).
"""

import ast

from rft.tasks.wordle.rewards import _feedback_symbols, _played_guess, _read_word_list, _render_feedback

MAX_GUESSES = 6


class WordleGame:
    """One game of Wordle against the row's secret; the course's feedback after every guess."""

    def reset(self, example):
        self.secret = example["secret"].upper()
        self.words = _read_word_list(example["word_list"])
        self.history = [tuple(pair) for pair in ast.literal_eval(example.get("past_guess_history") or "[]")]
        self.won = False
        return None  # the prompt already asks for the first guess

    def step(self, reply):
        guess = _played_guess(reply)
        if guess is None or len(guess) != 5 or guess not in self.words:
            problem = ("there is no <guess> block" if guess is None
                       else f"{guess} is not an allowed 5-letter word")
            self.history.append((guess or "?????", "invalid"))
            return None if self._over() else f"Invalid guess: {problem}. Make a new 5-letter word guess."
        feedback = _render_feedback(guess, _feedback_symbols(guess, self.secret))
        self.history.append((guess, feedback))
        self.won = guess == self.secret
        if self.won or self._over():
            return None
        return f"Guess {len(self.history)}: {guess} → Feedback: {feedback}\n\nMake a new 5-letter word guess."

    def reward(self):
        return 1.0 if self.won else 0.0

    def _over(self):
        return len(self.history) >= MAX_GUESSES
