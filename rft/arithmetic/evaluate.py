"""Evaluate a model on held-out arithmetic problems, next to the exact answers.

    python -m rft eval arithmetic --model M [--adapter DIR] --problems N [--seed S] [--out FILE.json]
                                  [--max-new-tokens K] [--batch-size B] [--device D]

Decoding is greedy. Problems are answered in batches (left-padded), since every one is a
single turn.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from rft.arithmetic.problems import HELD_OUT_COUNT, build_messages, held_out_problems, worked_steps
from rft.arithmetic.rewards import answer_format, correct_answer
from rft.config import BUNDLED_MODEL
from rft.data import render_prompt
from rft.models import generate_continuations

DEFAULT_PROBLEMS = 50
DEFAULT_MAX_NEW_TOKENS = 96
DEFAULT_BATCH_SIZE = 8
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
    return {
        "problems": len(details),
        "correct": sum(d["rewards"]["correct_answer"] == 1.0 for d in details),
        "accuracy": _mean([d["rewards"]["correct_answer"] == 1.0 for d in details]),
        "format_pass_rate": _mean([d["rewards"]["answer_format"] == 1.0 for d in details]),
        "mean_rewards": {f.__name__: _mean([d["rewards"][f.__name__] for d in details]) for f in REWARD_FUNCTIONS},
        "details": details,
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
        ("format check passed", percent(summary["format_pass_rate"]), "100.0%"),
    ]
    rows += [(f"mean {name}", f"{value:.2f}" if value is not None else "-", "1.00")
             for name, value in summary["mean_rewards"].items()]
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
    return parser.parse_args(argv)


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
