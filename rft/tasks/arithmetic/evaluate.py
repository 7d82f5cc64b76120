"""Evaluate a model on held-out arithmetic problems, next to the exact answers.

    python -m rft eval arithmetic --model M [--adapter DIR] --problems N [--seed S] [--out FILE.json]
                                  [--max-new-tokens K] [--batch-size B] [--device D]
                                  [--samples K --temperature T]

Decoding is greedy: accuracy is the share of problems whose greedy answer is right, with its 95%
interval. With --samples, each problem is also answered K times at the temperature given, and
the report adds pass@k (some of k samples right) for k = 1, 2, 4, ... up to K: the gap between
pass@k and greedy accuracy is the room GRPO has, since it sharpens what sampling already finds.
Problems are answered in batches (left-padded), since every one is a single turn.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rft.tasks.arithmetic.problems import HELD_OUT_COUNT, build_messages, held_out_problems, worked_steps
from rft.tasks.arithmetic.rewards import answer_format, correct_answer
from rft.config import BUNDLED_MODEL
from rft.data import render_prompt
from rft.models import generate_continuations
from rft.stats import pass_at_k, wilson_interval

DEFAULT_PROBLEMS = 50
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_BATCH_SIZE = 32
SAMPLED_ROWS_PER_BATCH = 64  # sampled answers generated together: problems per batch = this // samples
REWARD_FUNCTIONS = (answer_format, correct_answer)


def evaluation_problems(count: int, seed: int) -> list[str]:
    """`count` held-out expressions drawn with `seed`: the same problems for every model compared."""
    if not 1 <= count <= HELD_OUT_COUNT:
        raise ValueError(f"--problems must be between 1 and {HELD_OUT_COUNT} (the held-out problems), got {count}")
    return random.Random(seed).sample(held_out_problems(), count)


def evaluate(model, tokenizer, expressions: Sequence[str], max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
             batch_size: int = DEFAULT_BATCH_SIZE, on_batch_done: Callable[[int], None] | None = None) -> dict:
    """The model answers every expression; the summary and every answer. Rates are fractions."""
    details = []
    for first in range(0, len(expressions), batch_size):
        chunk = expressions[first:first + batch_size]
        prompts = [render_prompt(tokenizer, build_messages(expression)) for expression in chunk]
        for expression, completion in zip(chunk, generate_continuations(model, tokenizer, prompts, max_new_tokens)):
            example = {"expression": expression, "answer": worked_steps(expression)[1]}
            rewards = {function.__name__: function(None, completion, example) for function in REWARD_FUNCTIONS}
            details.append({**example, "completion": completion, "rewards": rewards})
        if on_batch_done is not None:
            on_batch_done(len(details))
    correct = sum(d["rewards"]["correct_answer"] == 1.0 for d in details)
    return {
        "problems": len(details),
        "correct": correct,
        "accuracy": _mean([d["rewards"]["correct_answer"] == 1.0 for d in details]),
        "accuracy_interval": list(wilson_interval(correct, len(details))),
        "format_pass_rate": _mean([d["rewards"]["answer_format"] == 1.0 for d in details]),
        "mean_rewards": {f.__name__: _mean([d["rewards"][f.__name__] for d in details]) for f in REWARD_FUNCTIONS},
        "details": details,
    }


def evaluate_sampled(model, tokenizer, expressions: Sequence[str], samples: int, temperature: float,
                     max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, seed: int = 0,
                     on_batch_done: Callable[[int], None] | None = None) -> dict:
    """Each expression answered `samples` times at `temperature`: pass@k for k = 1, 2, 4, ... samples.

    pass@1 here is the mean accuracy of one sample, what GRPO's correct_answer reward averages
    during training at the same temperature.
    """
    import torch

    torch.manual_seed(seed)
    per_batch = max(1, SAMPLED_ROWS_PER_BATCH // samples)
    correct_counts = []
    for first in range(0, len(expressions), per_batch):
        chunk = expressions[first:first + per_batch]
        prompts = [render_prompt(tokenizer, build_messages(expression)) for expression in chunk for _ in range(samples)]
        completions = generate_continuations(model, tokenizer, prompts, max_new_tokens, temperature)
        for index, expression in enumerate(chunk):
            example = {"expression": expression, "answer": worked_steps(expression)[1]}
            answers = completions[index * samples:(index + 1) * samples]
            correct_counts.append(sum(correct_answer(None, answer, example) == 1.0 for answer in answers))
        if on_batch_done is not None:
            on_batch_done(len(correct_counts))
    ks = sorted({2**power for power in range(samples.bit_length()) if 2**power <= samples} | {samples})
    return {
        "samples": samples,
        "temperature": temperature,
        "pass_at": {str(k): _mean([pass_at_k(samples, c, k) for c in correct_counts]) for k in ks},
        "correct_samples": correct_counts,
    }


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None


def format_report(summary: dict) -> str:
    """The summary as a two-column table, model beside the exact answers (the ceiling)."""

    def percent(value: float | None) -> str:
        return "-" if value is None else f"{100 * value:.1f}%"

    rows = [
        ("", "model", "exact"),
        ("problems solved", f"{summary['correct']}/{summary['problems']}", ""),
        ("accuracy", percent(summary["accuracy"]), "100.0%"),
    ]
    if "accuracy_interval" in summary:
        low, high = summary["accuracy_interval"]
        rows.append(("95% interval", f"{percent(low)} to {percent(high)}", ""))
    rows.append(("format check passed", percent(summary["format_pass_rate"]), "100.0%"))
    rows += [(f"mean {name}", f"{value:.2f}" if value is not None else "-", "1.00")
             for name, value in summary["mean_rewards"].items()]
    sampled = summary.get("sampled")
    if sampled:
        rows += [(f"pass@{k} (T={sampled['temperature']:g})", percent(value), "100.0%")
                 for k, value in sampled["pass_at"].items()]
    label_width = max(len(row[0]) for row in rows)
    return "\n".join(f"{label:<{label_width}}  {model:>8}  {exact:>8}".rstrip() for label, model, exact in rows)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rft eval arithmetic",
                                     description="Answer held-out arithmetic problems with a model (greedy).")
    parser.add_argument("--model", default=BUNDLED_MODEL, help="model reference (default: %(default)s)")
    parser.add_argument("--adapter", help="a PEFT adapter directory to apply to the model")
    parser.add_argument("--problems", type=int, default=DEFAULT_PROBLEMS, help=f"problems, 1 to {HELD_OUT_COUNT}")
    parser.add_argument("--seed", type=int, default=0, help="picks the problems")
    parser.add_argument("--out", type=Path, help="write the summary and every answer to this JSON file")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--samples", type=int, default=0,
                        help="also answer each problem this many times by sampling, for pass@k (0: greedy only)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature for --samples")
    args = parser.parse_args(argv)
    if args.samples < 0 or (args.samples and args.temperature <= 0):
        parser.error("--samples must be >= 0 and --temperature > 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        expressions = evaluation_problems(args.problems, args.seed)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    from rft.models import ModelLoadError, load_for_inference

    try:
        model, tokenizer = load_for_inference(args.model, adapter=args.adapter, device=args.device)
    except ModelLoadError as exc:
        print(exc, file=sys.stderr)
        return 1
    adapter = f" + adapter {args.adapter}" if args.adapter else ""
    print(f"Arithmetic: {args.model}{adapter}, {args.problems} held-out problems (seed {args.seed}), greedy, "
          f"up to {args.max_new_tokens} new tokens")
    started = time.perf_counter()
    summary = evaluate(model, tokenizer, expressions, args.max_new_tokens, args.batch_size,
                       on_batch_done=lambda done: print(f"{done}/{len(expressions)} answered", flush=True))
    if args.samples:
        summary["sampled"] = evaluate_sampled(
            model, tokenizer, expressions, args.samples, args.temperature, args.max_new_tokens, args.seed,
            on_batch_done=lambda done: print(f"{done}/{len(expressions)} sampled {args.samples} times", flush=True))
    elapsed = time.perf_counter() - started
    print()
    print(format_report(summary))
    print(f"\n{elapsed:.1f} s, {elapsed / len(expressions):.2f} s a problem")
    if args.out:
        record = {"model": args.model, "adapter": args.adapter, "seed": args.seed,
                  "max_new_tokens": args.max_new_tokens, "seconds": round(elapsed, 2), **summary}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"saved {args.out}")
    return 0
