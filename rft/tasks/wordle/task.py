"""The Wordle tasks: `wordle` (a game state a row, answered with one guess, as in the course) and
`wordle-game` (a secret a row, played whole in the Wordle environment)."""

from __future__ import annotations

from rft.tasks import Evaluator, Task
from rft.tasks.wordle import dataset, demonstrations, recipes


def _evaluate(model, tokenizer, count: int, seed: int, max_new_tokens: int | None = None, on_progress=None) -> dict:
    """`count` held-out games, each guess sampled (the same seed, the same games, as in the CLI)."""
    import torch

    from rft.tasks.wordle.evaluate import evaluate, evaluation_secrets

    torch.manual_seed(seed)
    limit = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    progress = {}
    if on_progress is not None:
        progress["on_round_played"] = lambda turn, playing: on_progress(
            f"turn {turn} played; {playing} of {count} games still going")
    return evaluate(model, tokenizer, evaluation_secrets(count, seed), **limit, **progress)


def _report(summary: dict) -> str:
    from rft.tasks.wordle.evaluate import format_report

    return format_report(summary)


def _main(argv: list[str]) -> int:
    from rft.tasks.wordle.evaluate import main

    return main(argv)


def _headline(summary: dict) -> tuple[str, list[bool], bool]:
    """Valid guesses among all turns; the turns differ from model to model (they follow its guesses)."""
    turns = [turn for game in summary["details"] for turn in game["turns"]]
    return "valid guesses", [not turn["invalid"] for turn in turns], False


TASKS = (
    Task("wordle", rows=lambda data: dataset.training_rows(),
         held_out_rows=lambda data, count: dataset.held_out_rows(count),
         recipe=recipes.wordle, variants={"wordle-guarded": recipes.wordle_guarded},
         demonstration=demonstrations.demonstration_for_row,
         evaluator=Evaluator("games", _evaluate, _report, "--games", _headline, _main)),
    Task("wordle-game", rows=lambda data: dataset.game_rows(),
         held_out_rows=lambda data, count: dataset.held_out_game_rows(count), recipe=recipes.wordle_game,
         demonstration=demonstrations.game_demonstration),
)
