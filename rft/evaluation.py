"""Evaluate a run's checkpoint, for the dashboard: the same table as `python -m rft eval`.

A run of a task preset (Wordle, arithmetic) is evaluated by the task's own evaluator on its
held-out secrets or problems; any other run on the rows it holds out (data.eval_size), with its
own reward functions (rft.held_out). The base model, the SFT warm start and every GRPO checkpoint
are evaluated on the same items, so the tables compare directly. Progress goes to `on_progress`,
which may raise to cancel the evaluation between batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rft.runs import checkpoint_path, list_checkpoints, read_config, sft_adapter_path

BASE_CHOICE = "base model"
SFT_CHOICE = "SFT warm start"
DEFAULT_COUNT = 3  # games or problems: CPU generation is slow, a Wordle game takes minutes


@dataclass(frozen=True)
class Task:
    unit: str  # what `count` counts, for the UI
    evaluate: Callable  # (model, tokenizer, count, seed, max_new_tokens=None, on_progress=None) -> summary dict
    report: Callable[[dict], str]


ProgressCallback = Callable[[str], None]


def _wordle(model, tokenizer, count: int, seed: int, max_new_tokens: int | None = None,
            on_progress: ProgressCallback | None = None) -> dict:
    import torch

    from rft.wordle.evaluate import evaluate, evaluation_secrets

    torch.manual_seed(seed)  # the games sample their guesses: the same seed, the same games, as in the CLI
    limit = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    progress = {}
    if on_progress is not None:
        progress["on_round_played"] = lambda turn, playing: on_progress(
            f"turn {turn} played; {playing} of {count} games still going")
    return evaluate(model, tokenizer, evaluation_secrets(count, seed), **limit, **progress)


def _wordle_report(summary: dict) -> str:
    from rft.wordle.evaluate import format_report

    return format_report(summary)


def _arithmetic(model, tokenizer, count: int, seed: int, max_new_tokens: int | None = None,
                on_progress: ProgressCallback | None = None) -> dict:
    from rft.arithmetic.evaluate import evaluate, evaluation_problems

    limit = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    done = (lambda answered: on_progress(f"{answered} of {count} problems answered")) if on_progress else None
    return evaluate(model, tokenizer, evaluation_problems(count, seed), **limit, on_batch_done=done)


def _arithmetic_report(summary: dict) -> str:
    from rft.arithmetic.evaluate import format_report

    return format_report(summary)


TASKS: dict[str, Task] = {
    "wordle": Task("games", _wordle, _wordle_report),
    "arithmetic": Task("problems", _arithmetic, _arithmetic_report),
}


def task_of(run_dir: str | Path) -> str | None:
    """The run's task (its dataset preset) when it has an evaluator, else None."""
    config = read_config(run_dir)
    return config.data.preset if not config.data.path and config.data.preset in TASKS else None


def checkpoint_choices(run_dir: str | Path) -> list[str]:
    """What can be evaluated: the base model, the warm start (if any), then each checkpoint step."""
    choices = [BASE_CHOICE]
    if sft_adapter_path(run_dir) is not None:
        choices.append(SFT_CHOICE)
    return choices + [f"step {step}" for step in list_checkpoints(run_dir)]


def adapter_for(run_dir: str | Path, choice: str) -> Path | None:
    """The adapter folder a choice stands for; None for the base model."""
    if choice == BASE_CHOICE:
        adapter = read_config(run_dir).model.adapter
        return Path(adapter) if adapter else None
    if choice == SFT_CHOICE:
        folder = sft_adapter_path(run_dir)
    else:
        step = choice.removeprefix("step ")
        folder = checkpoint_path(run_dir, int(step)) if step.isdigit() else None
    if folder is None:
        raise ValueError(f"{choice!r} is not a checkpoint of this run")
    return folder


def evaluation_unit(run_dir: str | Path) -> str:
    """What the Evaluate panel's count counts for this run."""
    task = task_of(run_dir)
    return TASKS[task].unit if task else "held-out rows"


def evaluate_checkpoint(run_dir: str | Path, choice: str, count: int = DEFAULT_COUNT, seed: int = 0,
                        on_progress: ProgressCallback | None = None) -> str:
    """The evaluation table of one checkpoint, with the command that reproduces it and its duration."""
    from rft.models import load_for_inference

    task = task_of(run_dir)
    if task is None:
        return _evaluate_held_out(run_dir, choice, count, on_progress)
    model_reference = read_config(run_dir).model.name_or_path
    adapter = adapter_for(run_dir, choice)
    started = time.perf_counter()
    model, tokenizer = load_for_inference(model_reference, adapter=str(adapter) if adapter else None)
    summary = TASKS[task].evaluate(model, tokenizer, count, seed, on_progress=on_progress)
    elapsed = time.perf_counter() - started
    counted = "--games" if task == "wordle" else "--problems"
    command = f"python -m rft eval {task} --model {model_reference}" + (f" --adapter {adapter}" if adapter else "") + \
        f" {counted} {count} --seed {seed}"
    return f"{TASKS[task].report(summary)}\n\n{choice}, {count} {TASKS[task].unit}, {elapsed:.0f} s\n$ {command}"


def _evaluate_held_out(run_dir: str | Path, choice: str, count: int,
                       on_progress: ProgressCallback | None) -> str:
    from rft import held_out

    done = (lambda answered: on_progress(f"{answered} held-out rows answered")) if on_progress else None
    summary = held_out.evaluate_checkpoint(run_dir, choice, count, on_batch_done=done)
    checkpoint = {long: short for short, long in held_out.CHECKPOINT_SHORTHANDS.items()}.get(choice, choice)
    command = f'python -m rft eval run {run_dir} --checkpoint "{checkpoint}" --rows {summary["rows"]}'
    return f"{held_out.format_report(summary)}\n{choice} · scored by the run's reward functions\n$ {command}"
