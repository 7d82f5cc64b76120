"""Evaluate a model at Wordle on held-out secrets, next to the entropy solver on the same secrets.

    python -m rft eval wordle --model M [--adapter DIR] --games N --seed S [--out FILE.json]
                              [--max-new-tokens K] [--temperature T] [--batch-size B] [--device D]

Decoding samples at temperature 0.7, seeded, by default. Greedy decoding (--temperature 0) says
little here: every game's first prompt is the same, so every game opens with the same guess, and
an invalid guess leaves the prompt unchanged (it uses up a turn, as in play.py, and adds no
feedback), so greedy decoding repeats it for the rest of the game.
The games still going play each turn together, in batches of B prompts.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from rft.config import BUNDLED_MODEL
from rft.tasks.wordle.dataset import HELD_OUT_COUNT, held_out_secrets
from rft.tasks.wordle.game import solve
from rft.tasks.wordle.play import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, REWARD_FUNCTIONS, GameResult, play_games
from rft.tasks.wordle.rewards import output_format_check

DEFAULT_GAMES = 20
DEFAULT_TEMPERATURE = 0.7


def evaluate(
    model,
    tokenizer,
    secrets: Sequence[str],
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = DEFAULT_TEMPERATURE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_game_played: Callable[[int, GameResult], None] | None = None,
    on_round_played: Callable[[int, int], None] | None = None,
) -> dict:
    """The model plays one game per secret; the summary, the solver's figures and every turn.

    Rates are fractions. Turn-level figures count every turn, one completion each, invalid ones
    included: the format pass rate is the share of well-formed answers (a <think> block, then a
    <guess> block, nothing else: output_format_check above 0), the valid-guess rate the share
    of guesses that were allowed five-letter words and got feedback. `on_game_played(index,
    result)` is called as each game ends, `on_round_played(turn, games still going)` after each
    turn of every game still going, for progress.
    """
    results = play_games(model, tokenizer, list(secrets), max_new_tokens, temperature, batch_size, on_game_played,
                         on_round_played)
    turns = [turn for result in results for turn in result.turns]
    return {
        "games": len(results),
        "wins": sum(result.won for result in results),
        "win_rate": _mean([result.won for result in results]),
        "mean_guesses_won": _mean([result.num_guesses for result in results if result.won]),
        "format_pass_rate": _mean([turn.rewards[output_format_check.__name__] > 0 for turn in turns]),
        "valid_guess_rate": _mean([not turn.invalid for turn in turns]),
        "mean_rewards": {
            function.__name__: _mean([turn.rewards[function.__name__] for turn in turns])
            for function in REWARD_FUNCTIONS
        },
        "solver": solver_figures(secrets),
        "details": [result.to_dict() for result in results],
    }


def solver_figures(secrets: Sequence[str]) -> dict:
    """The entropy solver on the same secrets: the reference a trained model is measured against."""
    games = [solve(secret) for secret in secrets]
    won = [len(game) for game, secret in zip(games, secrets) if game[-1][0] == secret.upper()]
    return {"win_rate": len(won) / len(secrets) if secrets else None, "mean_guesses_won": _mean(won)}


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def evaluation_secrets(games: int, seed: int) -> list[str]:
    """`games` held-out secrets drawn with `seed`: the same secrets for every model compared."""
    if not 1 <= games <= HELD_OUT_COUNT:
        raise ValueError(f"--games must be between 1 and {HELD_OUT_COUNT} (the held-out secrets), got {games}")
    return random.Random(seed).sample(held_out_secrets(), games)


def format_report(summary: dict) -> str:
    """The summary as a two-column table, model beside solver."""

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    solver = summary["solver"]
    rows = [
        ("", "model", "solver"),
        ("games won", f"{summary['wins']}/{summary['games']}", ""),
        ("win rate", percent(summary["win_rate"]), percent(solver["win_rate"])),
        ("mean guesses (won games)", number(summary["mean_guesses_won"]), number(solver["mean_guesses_won"])),
        ("well-formed answers", percent(summary["format_pass_rate"]), ""),
        ("valid guesses", percent(summary["valid_guess_rate"]), ""),
    ]
    rows += [(f"mean {name}", number(value), "") for name, value in summary["mean_rewards"].items()]
    label_width = max(len(row[0]) for row in rows)
    return "\n".join(f"{label:<{label_width}}  {model:>8}  {solver:>8}".rstrip() for label, model, solver in rows)


def describe_game(index: int, result: GameResult) -> str:
    guesses = " ".join(turn.guess if not turn.invalid else f"({turn.guess or '?'})" for turn in result.turns)
    outcome = f"won in {result.num_guesses}" if result.won else "lost"
    return f"{index + 1:>3}. {result.secret}  {outcome:<9}  {guesses}"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m rft eval wordle",
        description="Play Wordle with a model on held-out secrets and compare it with the entropy solver.",
    )
    parser.add_argument("--model", default=BUNDLED_MODEL, help="model reference (default: %(default)s)")
    parser.add_argument("--adapter", help="a PEFT adapter directory to apply to the model")
    parser.add_argument("--games", type=int, default=DEFAULT_GAMES, help=f"games to play, 1 to {HELD_OUT_COUNT}")
    parser.add_argument("--seed", type=int, default=0, help="picks the secrets (and seeds sampling)")
    parser.add_argument("--out", type=Path, help="write the summary and every turn to this JSON file")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE,
                        help="sampling temperature (default: %(default)s); 0 decodes greedily")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE,
                        help="games whose turns are generated together (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        secrets = evaluation_secrets(args.games, args.seed)
        if args.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    from rft.models import ModelLoadError, load_for_inference

    try:
        model, tokenizer = load_for_inference(args.model, adapter=args.adapter, device=args.device)
    except ModelLoadError as exc:
        print(exc, file=sys.stderr)
        return 1
    decoding = "greedy" if args.temperature <= 0 else f"temperature {args.temperature}"
    adapter = f" + adapter {args.adapter}" if args.adapter else ""
    print(f"Wordle: {args.model}{adapter}, {args.games} held-out secrets (seed {args.seed}), {decoding}, "
          f"up to {args.max_new_tokens} new tokens a turn")
    torch.manual_seed(args.seed)
    started = time.perf_counter()
    summary = evaluate(
        model, tokenizer, secrets, args.max_new_tokens, args.temperature, args.batch_size,
        on_game_played=lambda index, result: print(describe_game(index, result), flush=True),
    )
    elapsed = time.perf_counter() - started
    print()
    print(format_report(summary))
    print(f"\n{elapsed:.1f} s, {elapsed / len(secrets):.1f} s a game")
    if args.out:
        record = {"model": args.model, "adapter": args.adapter, "seed": args.seed, "temperature": args.temperature,
                  "max_new_tokens": args.max_new_tokens, "seconds": round(elapsed, 2), **summary}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"saved {args.out}")
    return 0
