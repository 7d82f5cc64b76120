"""A person against a model at Wordle: the same secret, a board each, one guess each per turn.

The person guesses first, then the model plays its turn (rft.tasks.wordle.play.play_turn). The person's
invalid guesses are refused and cost nothing; the model's count as a turn, as in evaluation.
The winner is whoever solves in fewer guesses; the game ends as soon as that is settled.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field

from rft.tasks.wordle.dataset import held_out_secrets
from rft.tasks.wordle.game import MAX_GUESSES, WORD_LENGTH, allowed_words, feedback
from rft.tasks.wordle.play import GameResult, Turn

PERSON, MODEL, TIE, NOBODY = "you", "model", "tie", "nobody"
THINK_END = "</think>"


class InvalidGuess(ValueError):
    """A word the game does not accept; the message tells the person why."""


def normalise_word(text: str, what: str = "guess") -> str:
    """An upper-case five-letter allowed word, or InvalidGuess saying what is wrong."""
    word = (text or "").strip().upper()
    if not re.fullmatch(r"[A-Z]+", word):
        raise InvalidGuess(f"Your {what} must be letters only (got {text!r}).")
    if len(word) != WORD_LENGTH:
        raise InvalidGuess(f"Your {what} must have {WORD_LENGTH} letters; {word} has {len(word)}.")
    if word not in allowed_words():
        raise InvalidGuess(f"{word} is not in the word list.")
    return word


def random_secret(rng: random.Random | None = None) -> str:
    """A secret from the held-out answers, which no training row ever used."""
    return (rng or random).choice(held_out_secrets())


def reasoning(completion: str) -> str:
    """The model's <think> text: its completion up to </think> (the prompt opened the block)."""
    return completion.split(THINK_END, 1)[0].strip()


@dataclass
class VersusGame:
    secret: str
    person: list[tuple[str, str]] = field(default_factory=list)  # (guess, feedback)
    model: GameResult | None = None

    def __post_init__(self):
        self.secret = normalise_word(self.secret, "secret")
        if self.model is None:
            self.model = GameResult(secret=self.secret)

    # ---- moves -----------------------------------------------------------------------------------

    def play_person(self, text: str) -> str:
        """Record the person's guess and return its feedback; InvalidGuess when it is refused."""
        if self.over:
            raise InvalidGuess("The game is over; start a new one.")
        if self.person_done:
            raise InvalidGuess("Your board is finished; the model is still playing.")
        guess = normalise_word(text)
        result = feedback(guess, self.secret)
        self.person.append((guess, result))
        return result

    def record_model_turn(self, turn: Turn) -> None:
        self.model.turns.append(turn)

    @property
    def model_to_play(self) -> bool:
        """The model has fewer turns than the person and the game is still open."""
        return not self.over and not self.model_done and self.model.num_guesses < len(self.person)

    # ---- state ------------------------------------------------------------------------------------

    @property
    def person_solved_in(self) -> int | None:
        return len(self.person) if self.person and self.person[-1][0] == self.secret else None

    @property
    def model_solved_in(self) -> int | None:
        return self.model.num_guesses if self.model.won else None

    @property
    def person_done(self) -> bool:
        return self.person_solved_in is not None or len(self.person) >= MAX_GUESSES

    @property
    def model_done(self) -> bool:
        return self.model.won or self.model.num_guesses >= MAX_GUESSES

    @property
    def winner(self) -> str | None:
        """PERSON, MODEL, TIE or NOBODY once settled; None while either side could still win."""
        person, model = self.person_solved_in, self.model_solved_in
        if person is not None and model is not None:
            return TIE if person == model else PERSON if person < model else MODEL
        if person is not None and (self.model_done or self.model.num_guesses >= person):
            return PERSON
        if model is not None and (self.person_done or len(self.person) >= model):
            return MODEL
        if self.person_done and self.model_done:
            return NOBODY
        return None

    @property
    def over(self) -> bool:
        return self.winner is not None
