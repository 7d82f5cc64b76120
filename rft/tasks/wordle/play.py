"""A model plays Wordle: one turn at a time (the Play tab's versus mode) or whole games, batched.

Each turn the model sees the course prompt with the feedback so far, continues the pre-filled
"<think>", and its first `<guess> WORD </guess>` is played. A guess that is missing, not five
letters or not an allowed word is invalid: it uses up the turn and gets no feedback.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from rft.config import DataConfig
from rft.data import render_prompt
from rft.models import generate_continuations
from rft.tasks.wordle.game import ALLOWED_PATH, MAX_GUESSES, WORD_LENGTH, allowed_words, feedback
from rft.tasks.wordle.prompts import build_messages
from rft.tasks.wordle.rewards import GUESS_PATTERN, fits_feedback, guess_value, output_format_check, uses_previous_feedback

DEFAULT_MAX_NEW_TOKENS = 256
DEFAULT_BATCH_SIZE = 32  # 30 games took 106 s in batches of 32 and 128 s in batches of 16 (README, "Generation")
REWARD_FUNCTIONS = (output_format_check, uses_previous_feedback, guess_value, fits_feedback)


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
    return play_turns(model, tokenizer, [(secret, history)], max_new_tokens, temperature)[0]


def play_turns(
    model,
    tokenizer,
    positions: list[tuple[str, list[tuple[str, str]]]],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
) -> list[Turn]:
    """The model's next guess in each game, given as (secret, history); the games' prompts
    are generated as one batch."""
    messages = [build_messages(history) for _, history in positions]
    prompt_texts = [render_prompt(tokenizer, conversation) for conversation in messages]
    completions = generate_continuations(model, tokenizer, prompt_texts, max_new_tokens, temperature)
    return [_scored_turn(secret, history, conversation, prompt_text, completion)
            for (secret, history), conversation, prompt_text, completion
            in zip(positions, messages, prompt_texts, completions, strict=True)]


def _scored_turn(secret: str, history: list[tuple[str, str]], messages: list[dict], prompt_text: str,
                 completion: str) -> Turn:
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


def play_conversation_turn(model, tokenizer, game: GameResult, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                           temperature: float = 0.0) -> Turn:
    """The model's next guess in a game it plays as one conversation, the way the wordle-game recipe
    trains: its earlier replies, each answered by the Wordle environment's feedback message
    (rft.tasks.wordle.environment), then the next reply; for a policy trained so."""
    from rft.config import SamplingConfig
    from rft.data import example_of, to_messages
    from rft.environments import episodes
    from rft.environments.runtime import EnvironmentRuntime
    from rft.tasks.wordle import environment_source
    from rft.tasks.wordle.dataset import make_row

    row = make_row(game.secret, [])
    sampling = SamplingConfig(num_generations=1, max_completion_length=max_new_tokens, temperature=temperature)
    with EnvironmentRuntime(environment_source()) as runtime:
        played = episodes.next_reply(model, tokenizer, to_messages(row, DataConfig()), example_of(row, DataConfig()),
                                     [turn.completion for turn in game.turns], sampling, runtime)
    if played is None:
        raise ValueError(f"the game against {game.secret} is over: there is no next guess to play")
    conversation, reply = played
    return _scored_turn(game.secret, game.history, build_messages(game.history), conversation, reply)


def play_games(
    model,
    tokenizer,
    secrets: list[str],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_game_played: Callable[[int, GameResult], None] | None = None,
    on_round_played: Callable[[int, int], None] | None = None,
) -> list[GameResult]:
    """Full games, each until its secret is guessed or six turns are used. The games still going
    play their next turn together, `batch_size` prompts per generation: a decode step of many rows
    costs far less than as many steps of one. Which games share a batch decides the random
    numbers each one's sampling draws, so the same seed repeats the same games only at the same
    batch size. `on_game_played(index, result)` is called as each game
    ends, `on_round_played(turn, games still going)` after every turn.
    """
    results = [GameResult(secret=secret.upper()) for secret in secrets]
    playing = list(range(len(results)))
    while playing:
        for first in range(0, len(playing), batch_size):
            batch = playing[first:first + batch_size]
            turns = play_turns(model, tokenizer, [(results[i].secret, results[i].history) for i in batch],
                               max_new_tokens, temperature)
            for index, turn in zip(batch, turns, strict=True):
                results[index].turns.append(turn)
        finished = [i for i in playing if results[i].won or len(results[i].turns) == MAX_GUESSES]
        playing = [i for i in playing if i not in finished]
        for index in finished:
            if on_game_played is not None:
                on_game_played(index, results[index])
        if on_round_played is not None:
            on_round_played(max(len(results[i].turns) for i in range(len(results))), len(playing))
    return results
