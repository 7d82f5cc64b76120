"""The built-in Wordle training set, made like the course's `predibase/wordle-grpo`.

Each training secret is played twice: once by the entropy solver (histories a good player
leaves) and once with random answer words (histories full of letters to avoid). Every game
state before a guess, with 0 to 5 past guesses, becomes one row:

    prompt               the chat messages of rft.tasks.wordle.prompts.build_messages
    secret               the word to find
    past_guess_history   a Python-literal list of [guess, feedback] pairs, as the course stores it
    word_list            the absolute path of the allowed-words file the rewards check guesses against

A fixed sample of answer words is held out for evaluation and never appears in training rows.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from rft.tasks.wordle.game import ALLOWED_PATH, MAX_GUESSES, answer_words, feedback, solve
from rft.tasks.wordle.prompts import build_messages

DEFAULT_NUM_SECRETS = 500  # about 4,200 rows, generated in about two seconds
HELD_OUT_COUNT = 200
HELD_OUT_SEED = 20250101  # fixed forever, so evaluations stay comparable across versions


def held_out_secrets(n: int | None = None) -> list[str]:
    """The evaluation secrets (the first `n` of them; all 200 when None), always the same."""
    secrets = random.Random(HELD_OUT_SEED).sample(answer_words(), HELD_OUT_COUNT)
    return secrets if n is None else secrets[:n]


def training_secrets(num_secrets: int = DEFAULT_NUM_SECRETS, seed: int = 0) -> list[str]:
    """`num_secrets` answer words drawn with `seed`, never one of the held-out secrets."""
    held_out = set(held_out_secrets())
    pool = [word for word in answer_words() if word not in held_out]
    if not 1 <= num_secrets <= len(pool):
        raise ValueError(f"num_secrets must be between 1 and {len(pool)}, got {num_secrets}")
    return random.Random(seed).sample(pool, num_secrets)


def training_rows(num_secrets: int = DEFAULT_NUM_SECRETS, seed: int = 0) -> list[dict]:
    """The training rows for `num_secrets` secrets, shuffled; the same for the same arguments."""
    rng = random.Random(seed)
    rows, seen = [], set()
    for secret in training_secrets(num_secrets, seed):
        for game in (solve(secret), random_game(secret, rng)):
            for turn in range(len(game)):
                history = [list(pair) for pair in game[:turn]]
                key = (secret, str(history))
                if key not in seen:  # both games start from the same empty history
                    seen.add(key)
                    rows.append(make_row(secret, history))
    rng.shuffle(rows)  # so that the first rows (a dataset limit, a preview) mix every kind of state
    return rows


def held_out_rows(count: int) -> list[dict]:
    """`count` game states of the held-out secrets, made as the training rows are (a solver game
    and a random one per secret, every state before a guess), for a run's periodic evaluation."""
    rng = random.Random(HELD_OUT_SEED)
    rows, seen = [], set()
    for secret in held_out_secrets():
        for game in (solve(secret), random_game(secret, rng)):
            for turn in range(len(game)):
                history = [list(pair) for pair in game[:turn]]
                if (secret, str(history)) not in seen and len(rows) < count:
                    seen.add((secret, str(history)))
                    rows.append(make_row(secret, history))
        if len(rows) == count:
            break
    return rows


def game_rows(num_secrets: int = DEFAULT_NUM_SECRETS, seed: int = 0) -> list[dict]:
    """One row per training secret, at the start of its game: what the wordle-game preset plays whole."""
    return [make_row(secret, []) for secret in training_secrets(num_secrets, seed)]


def held_out_game_rows(count: int) -> list[dict]:
    """The first `count` held-out secrets, each at the start of its game."""
    return [make_row(secret, []) for secret in held_out_secrets(count)]


def random_game(secret: str, rng: random.Random) -> list[tuple[str, str]]:
    """A game of uniformly random answer words: (guess, feedback) pairs until won or six."""
    history = []
    while len(history) < MAX_GUESSES:
        guess = rng.choice(answer_words())
        history.append((guess, feedback(guess, secret)))
        if guess == secret:
            break
    return history


def make_row(secret: str, past_guess_history: list[list[str]]) -> dict:
    return {
        "prompt": build_messages(past_guess_history),
        "secret": secret,
        "past_guess_history": str(past_guess_history),
        "word_list": str(ALLOWED_PATH),
    }


def write_jsonl(rows: list[dict], path: str | Path) -> None:
    with open(path, "w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
