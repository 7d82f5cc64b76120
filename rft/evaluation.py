"""Evaluate a run's checkpoint, for the dashboard: the same table as `python -m rft eval`.

A run of a task with an evaluator of its own (Wordle, arithmetic) is evaluated by it on its
held-out secrets or problems; any other run on the rows it holds out (data.eval_size), with its
own reward functions (rft.held_out). The base model, the SFT warm start and every GRPO checkpoint
are evaluated on the same items, so the tables compare directly. Progress goes to `on_progress`,
which may raise to cancel the evaluation between batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rft import tasks
from rft.runs import checkpoint_path, list_checkpoints, read_config, sft_adapter_path

BASE_CHOICE = "base model"
SFT_CHOICE = "SFT warm start"
DEFAULT_COUNT = 3  # games or problems: CPU generation is slow, a Wordle game takes minutes


ProgressCallback = Callable[[str], None]


def evaluator_of(run_dir: str | Path) -> tasks.Evaluator | None:
    """The evaluator of the run's task (its dataset preset), when the task has one."""
    config = read_config(run_dir)
    task = None if config.data.path else tasks.task(config.data.preset)
    return task.evaluator if task is not None else None


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
    evaluator = evaluator_of(run_dir)
    return evaluator.unit if evaluator else "held-out rows"


def evaluate_checkpoint(run_dir: str | Path, choice: str, count: int = DEFAULT_COUNT, seed: int = 0,
                        on_progress: ProgressCallback | None = None) -> str:
    """The evaluation table of one checkpoint, with the command that reproduces it and its duration."""
    from rft.models import load_for_inference

    evaluator = evaluator_of(run_dir)
    if evaluator is None:
        return _evaluate_held_out(run_dir, choice, count, on_progress)
    config = read_config(run_dir)
    adapter = adapter_for(run_dir, choice)
    started = time.perf_counter()
    model, tokenizer = load_for_inference(config.model.name_or_path, adapter=str(adapter) if adapter else None,
                                          load_in_4bit=config.model.load_in_4bit)
    summary = evaluator.evaluate(model, tokenizer, count, seed, on_progress=on_progress)
    elapsed = time.perf_counter() - started
    command = f"python -m rft eval {config.data.preset} --model {config.model.name_or_path}" + \
        (f" --adapter {adapter}" if adapter else "") + f" {evaluator.count_option} {count} --seed {seed}"
    return f"{evaluator.report(summary)}\n\n{choice}, {count} {evaluator.unit}, {elapsed:.0f} s\n$ {command}"


def _evaluate_held_out(run_dir: str | Path, choice: str, count: int,
                       on_progress: ProgressCallback | None) -> str:
    from rft import held_out

    done = (lambda answered: on_progress(f"{answered} held-out rows answered")) if on_progress else None
    summary = held_out.evaluate_checkpoint(run_dir, choice, count, on_batch_done=done)
    checkpoint = {long: short for short, long in held_out.CHECKPOINT_SHORTHANDS.items()}.get(choice, choice)
    command = f'python -m rft eval run {run_dir} --checkpoint "{checkpoint}" --rows {summary["rows"]}'
    return f"{held_out.format_report(summary)}\n{choice} · scored by the run's reward functions\n$ {command}"
