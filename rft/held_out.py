"""Evaluate any run on its held-out rows, with its own reward functions.

    python -m rft eval run RUN_DIR [--checkpoint "step 20" | sft | base] [--rows N] [--out FILE.json]

A run holds out `data.eval_size` rows (a dataset file: a fixed random choice of its rows, never
trained on; a task preset: its evaluator's held-out items). The model answers each one greedily,
up to the run's max completion length, and the run's reward functions score the answers: each
function's mean with its 95% interval, and its pass rate where the function only gives 0 or 1.
The trainer runs the same evaluation every `schedule.eval_every` steps (Monitor's "Held-out
reward" chart), and the Runs tab's Evaluate panel runs it on any checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rft import data as datasets
from rft.config import RunConfig
from rft.environments.runtime import ENVIRONMENT_REWARD
from rft.models import cpu_bf16_matmuls, generate_continuations
from rft.stats import mean_interval, wilson_interval

BATCH_SIZE = 32  # prompts generated together; a single turn each


def evaluate_rows(model, tokenizer, config: RunConfig, rows: list[dict], rewards,
                  on_batch_done: Callable[[int], None] | None = None, environment=None) -> dict:
    """Greedy answers to `rows`, scored by `rewards` (a RewardRuntime): the summary and every answer.
    A run with an environment plays one greedy episode per row, in `environment` (an
    EnvironmentRuntime; one is started from the config when none is given)."""
    started = time.perf_counter()
    own_environment = environment is None and config.environment.enabled
    if own_environment:
        from rft.environments.runtime import EnvironmentRuntime

        environment = EnvironmentRuntime(config.environment.source, config.environment.class_name,
                                         config.environment.timeout_s)
    names = list(rewards.function_names)
    if environment is not None and environment.has_reward:
        names.append(ENVIRONMENT_REWARD)
    details, per_function, totals = [], {name: [] for name in names}, []
    try:
        for first in range(0, len(rows), BATCH_SIZE):
            for detail in _answer_and_score(model, tokenizer, config, rows[first:first + BATCH_SIZE], rewards,
                                            environment):
                for name in names:
                    per_function[name].append(detail["rewards"][name])
                totals.append(detail["total"])
                details.append(detail)
            if on_batch_done is not None:
                on_batch_done(len(details))
    finally:
        if own_environment:
            environment.close()
    mean, low, high = mean_interval([total for total in totals if not math.isnan(total)])
    return {
        "rows": len(details),
        "seconds": round(time.perf_counter() - started, 2),
        "reward": {"mean": mean, "low": low, "high": high},
        "functions": {name: function_summary(values) for name, values in per_function.items()},
        "details": details,
    }


def _answer_and_score(model, tokenizer, config: RunConfig, rows: list[dict], rewards, environment) -> list[dict]:
    """Each row answered greedily (or played as one greedy episode) and scored: one detail per row."""
    data = config.data
    messages = [datasets.to_messages(row, data) for row in rows]
    examples = [datasets.example_of(row, data) for row in rows]
    played = None
    bf16 = cpu_bf16_matmuls(next(model.parameters()).device, config.model.dtype)
    if environment is None:
        prompts = [datasets.render_prompt(tokenizer, m) for m in messages]
        completions = generate_continuations(model, tokenizer, prompts, config.sampling.max_completion_length, bf16=bf16)
        completion_ids = [tokenizer(text, add_special_tokens=False).input_ids for text in completions]
        scores = rewards.score(prompts, completions, examples, completion_ids)
        per_function, totals = scores.per_function, scores.total
    else:
        from rft.environments import episodes

        greedy = dataclasses.replace(config.sampling, num_generations=1, temperature=0.0)
        batch = episodes.play(model, tokenizer, messages, examples, greedy, config.environment, environment, bf16=bf16)
        played, messages = batch.episodes, batch.prompt_messages
        completions = [episode.replies[-1] if episode.replies else "" for episode in played]
        scored = episodes.score_episodes(rewards, batch.prompt_texts, played, examples, environment.has_reward,
                                         config.environment.reward_weight)
        per_function, totals = scored.per_function, scored.totals
    details = []
    for index, (message_list, completion) in enumerate(zip(messages, completions)):
        detail = {"prompt": datasets.prompt_text_for_display(message_list), "completion": completion,
                  "rewards": {name: values[index] for name, values in per_function.items()}, "total": totals[index]}
        if played is not None:
            detail["episode"] = played[index].summary()
        details.append(detail)
    return details


def function_summary(values: Sequence[float]) -> dict:
    """A function's mean and 95% interval over the rows it scored; a 0/1 check also gets its pass rate."""
    present = [value for value in values if not math.isnan(value)]
    binary = bool(present) and all(value in (0.0, 1.0) for value in present)
    if binary:
        passed = int(sum(present))
        low, high = wilson_interval(passed, len(present))
        mean = passed / len(present)
    else:
        mean, low, high = mean_interval(present)
    return {"mean": mean, "low": low, "high": high, "binary": binary, "missing": len(values) - len(present)}


def metrics_row(step: int, summary: dict) -> dict:
    """The summary as one row of eval_metrics.jsonl: what Monitor charts against the step."""
    row = {"step": step, "eval/rows": summary["rows"], "eval/seconds": summary["seconds"]}
    for name, stats in [("reward", summary["reward"]), *summary["functions"].items()]:
        row[f"eval/{name}"] = stats["mean"]
        row[f"eval/{name}/low"] = stats["low"]
        row[f"eval/{name}/high"] = stats["high"]
    return row


def format_report(summary: dict) -> str:
    """A table: the weighted reward, then each function (pass rate for a 0/1 check), with intervals."""

    def number(value: float) -> str:
        return "-" if value is None or math.isnan(value) else f"{value:.3f}"

    lines = [f"{'reward function':<28} {'mean':>8}  95% interval"]
    for name, stats in [("reward (weighted sum)", summary["reward"]), *summary["functions"].items()]:
        label = f"{name} (pass rate)" if stats.get("binary") else name
        missing = f"  ({stats['missing']} missing)" if stats.get("missing") else ""
        lines.append(f"{label:<28} {number(stats['mean']):>8}  {number(stats['low'])} to {number(stats['high'])}"
                     f"{missing}")
    lines.append(f"\n{summary['rows']} held-out rows, greedy, {summary['seconds']:.0f} s")
    return "\n".join(lines)


def held_out_rows_of(config: RunConfig, count: int | None = None) -> list[dict]:
    """The run's held-out rows (the first `count`); ValueError saying why when there are none to use."""
    data = config.data
    if data.path and data.eval_size == 0:
        raise ValueError("this run holds out no rows of its dataset file, so every row may have been trained on; "
                         "set data.eval_size (Train tab: Held-out rows) in a new run")
    if data.path and count and count > data.eval_size:
        raise ValueError(f"this run holds out {data.eval_size} rows; ask for at most that many")
    if not data.path and not (count or data.eval_size):
        raise ValueError("say how many held-out rows to use (--rows)")
    size = data.eval_size if data.path else (count or data.eval_size)
    rows = datasets.load_held_out_rows(dataclasses.replace(data, eval_size=size))
    return rows[:count] if count else rows


def evaluate_checkpoint(run_dir: str | Path, choice: str, count: int | None = None,
                        on_batch_done: Callable[[int], None] | None = None) -> dict:
    """A run's checkpoint (a choice of rft.evaluation.checkpoint_choices) on its held-out rows, scored by
    the reward code the run uses now (its last version), so every checkpoint is scored alike."""
    from rft.evaluation import adapter_for
    from rft.models import load_for_inference
    from rft.rewards import versions as reward_versions
    from rft.rewards.runtime import RewardRuntime
    from rft.runs import read_config

    config = read_config(run_dir)
    rows = held_out_rows_of(config, count)
    every_version = reward_versions.versions(run_dir)
    source, weights = ((every_version[-1].source, every_version[-1].weights) if every_version
                       else (config.rewards.source, config.rewards.weights))
    adapter = adapter_for(run_dir, choice)
    model, tokenizer = load_for_inference(config.model.name_or_path, adapter=str(adapter) if adapter else None,
                                          load_in_4bit=config.model.load_in_4bit)
    rewards = RewardRuntime(source, weights, config.rewards.timeout_s)
    try:
        summary = evaluate_rows(model, tokenizer, config, rows, rewards, on_batch_done)
    finally:
        rewards.close()
    return {"run": str(run_dir), "checkpoint": choice, **summary}


CHECKPOINT_SHORTHANDS = {"base": "base model", "sft": "SFT warm start"}  # rft.evaluation's choices


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rft eval run",
                                     description="Evaluate a run's checkpoint on its held-out rows with its reward functions.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--checkpoint", default=None,
                        help="'step N', 'sft' (the warm start) or 'base' (the model it started from); default: the last")
    parser.add_argument("--rows", type=int, help="use the first N held-out rows (default: all the run holds out)")
    parser.add_argument("--out", type=Path, help="write the summary and every answer to this JSON file")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    from rft.evaluation import checkpoint_choices
    from rft.models import ModelLoadError
    from rft.rewards.analysis import RewardCodeError

    args = parse_args(sys.argv[1:] if argv is None else argv)
    if not (args.run_dir / "config.yaml").exists():
        print(f"{args.run_dir}: not a run directory (no config.yaml)", file=sys.stderr)
        return 2
    choices = checkpoint_choices(args.run_dir)
    choice = CHECKPOINT_SHORTHANDS.get(args.checkpoint, args.checkpoint) or choices[-1]
    if choice not in choices:
        print(f"{args.checkpoint!r}: not a checkpoint of this run; choose one of {', '.join(choices)}", file=sys.stderr)
        return 2
    try:
        summary = evaluate_checkpoint(args.run_dir, choice, args.rows,
                                      on_batch_done=lambda done: print(f"{done} rows answered", flush=True))
    except (ValueError, ModelLoadError, RewardCodeError, datasets.DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"\n{args.run_dir} · {choice}\n")
    print(format_report(summary))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=1, ensure_ascii=False, default=float), encoding="utf-8")
        print(f"saved {args.out}")
    return 0
