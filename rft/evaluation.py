"""Evaluate a run's checkpoint on its task, for the dashboard: the same table as `python -m rft eval`.

A run's task is its dataset preset; the base model, the SFT warm start and every GRPO
checkpoint of the run can be evaluated on the same held-out secrets or problems, so the
tables compare directly.
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
    evaluate: Callable  # (model, tokenizer, count, seed, max_new_tokens=None) -> summary dict
    report: Callable[[dict], str]


def _wordle(model, tokenizer, count: int, seed: int, max_new_tokens: int | None = None) -> dict:
    import torch

    from rft.wordle.evaluate import evaluate, evaluation_secrets

    torch.manual_seed(seed)  # the games sample their guesses: the same seed, the same games, as in the CLI
    limit = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    return evaluate(model, tokenizer, evaluation_secrets(count, seed), **limit)


def _wordle_report(summary: dict) -> str:
    from rft.wordle.evaluate import format_report

    return format_report(summary)


def _arithmetic(model, tokenizer, count: int, seed: int, max_new_tokens: int | None = None) -> dict:
    from rft.arithmetic.evaluate import evaluate, evaluation_problems

    limit = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    return evaluate(model, tokenizer, evaluation_problems(count, seed), **limit)


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


def evaluate_checkpoint(run_dir: str | Path, choice: str, count: int = DEFAULT_COUNT, seed: int = 0) -> str:
    """The evaluation table of one checkpoint, with the command that reproduces it and its duration."""
    from rft.models import load_for_inference

    task = task_of(run_dir)
    if task is None:
        raise ValueError("this run's dataset has no evaluator; evaluation covers the wordle and arithmetic presets")
    model_reference = read_config(run_dir).model.name_or_path
    adapter = adapter_for(run_dir, choice)
    started = time.perf_counter()
    model, tokenizer = load_for_inference(model_reference, adapter=str(adapter) if adapter else None)
    summary = TASKS[task].evaluate(model, tokenizer, count, seed)
    elapsed = time.perf_counter() - started
    counted = "--games" if task == "wordle" else "--problems"
    command = f"python -m rft eval {task} --model {model_reference}" + (f" --adapter {adapter}" if adapter else "") + \
        f" {counted} {count} --seed {seed}"
    return f"{TASKS[task].report(summary)}\n\n{choice}, {count} {TASKS[task].unit}, {elapsed:.0f} s\n$ {command}"
