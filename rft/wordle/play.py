"""A model plays Wordle: one turn at a time (the Play tab's versus mode) or a whole game.

Each turn the model sees the course prompt with the feedback so far, continues the pre-filled
"<think>", and its first `<guess> WORD </guess>` is played. A guess that is missing, not five
letters or not an allowed word is invalid: it uses up the turn and gets no feedback.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

import torch

from rft.data import render_prompt
from rft.wordle.game import ALLOWED_PATH, MAX_GUESSES, WORD_LENGTH, allowed_words, feedback
from rft.wordle.prompts import build_messages
from rft.wordle.rewards import GUESS_PATTERN, guess_value, output_format_check, uses_previous_feedback

DEFAULT_MAX_NEW_TOKENS = 256
REWARD_FUNCTIONS = (output_format_check, uses_previous_feedback, guess_value)


@dataclass
class Turn:
    prompt_text: str  # exactly what the model was given, chat template applied
    completion: str  # what the model wrote after the pre-filled "<think>"
    guess: str | None  # upper-cased; None when there was no <guess> block
    feedback: str | None  # None when the guess was invalid
    rewards: dict[str, float]  # each course reward function's score for this completion

    @property
    def invalid(self) -> bool:
        return self.feedback is None

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "invalid": self.invalid}


@dataclass
class GameResult:
    secret: str
    turns: list[Turn] = field(default_factory=list)

    @property
    def won(self) -> bool:
        return bool(self.turns) and not self.turns[-1].invalid and self.turns[-1].guess == self.secret

    @property
    def num_guesses(self) -> int:
        """Turns used, invalid guesses included."""
        return len(self.turns)

    @property
    def history(self) -> list[tuple[str, str]]:
        """The valid guesses and their feedback: what the next prompt shows."""
        return [(turn.guess, turn.feedback) for turn in self.turns if not turn.invalid]

    def to_dict(self) -> dict:
        return {
            "secret": self.secret,
            "won": self.won,
            "num_guesses": self.num_guesses,
            "turns": [turn.to_dict() for turn in self.turns],
        }


def play_turn(
    model,
    tokenizer,
    secret: str,
    history: list[tuple[str, str]],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
) -> Turn:
    """The model's next guess against `secret` after `history`; temperature 0 decodes greedily."""
    messages = build_messages(history)
    prompt_text = render_prompt(tokenizer, messages)
    completion = generate(model, tokenizer, prompt_text, max_new_tokens, temperature)
    match = re.search(GUESS_PATTERN, "<think>" + completion)
    guess = match.group(1).upper() if match else None
    valid = guess is not None and len(guess) == WORD_LENGTH and guess in allowed_words()
    example = {"secret": secret, "past_guess_history": str([list(pair) for pair in history]), "word_list": str(ALLOWED_PATH)}
    return Turn(
        prompt_text=prompt_text,
        completion=completion,
        guess=guess,
        feedback=feedback(guess, secret) if valid else None,
        rewards={function.__name__: function(messages, completion, example) for function in REWARD_FUNCTIONS},
    )


def play_game(
    model,
    tokenizer,
    secret: str,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
) -> GameResult:
    """A full game: turns until the secret is guessed or six turns are used."""
    result = GameResult(secret=secret.upper())
    while len(result.turns) < MAX_GUESSES and not result.won:
        result.turns.append(play_turn(model, tokenizer, result.secret, result.history, max_new_tokens, temperature))
    return result


def generate(model, tokenizer, prompt_text: str, max_new_tokens: int, temperature: float) -> str:
    """The model's continuation of `prompt_text`, without the prompt and special tokens."""
    # The chat template already wrote any special tokens the model expects at the start.
    inputs = tokenizer(prompt_text, return_tensors="pt", add_special_tokens=False).to(model.device)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=max_new_tokens, pad_token_id=pad_token_id, **sampling)
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    return tokenizer.decode(new_tokens, skip_special_tokens=True)
