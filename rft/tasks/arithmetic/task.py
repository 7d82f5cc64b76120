"""The arithmetic tasks: `arithmetic` (answer once, working in <think>) and `arithmetic-tools` (the same
problems, with a calculator tool the model may call in an environment)."""

from __future__ import annotations

from rft.tasks import Evaluator, Task
from rft.tasks.arithmetic import problems, recipes
from rft.tasks.arithmetic.evaluate import evaluation_problems


def _evaluate(model, tokenizer, count: int, seed: int, max_new_tokens: int | None = None, on_progress=None) -> dict:
    """`count` held-out problems, answered greedily."""
    from rft.tasks.arithmetic.evaluate import evaluate

    limit = {"max_new_tokens": max_new_tokens} if max_new_tokens else {}
    done = (lambda answered: on_progress(f"{answered} of {count} problems answered")) if on_progress else None
    return evaluate(model, tokenizer, evaluation_problems(count, seed), **limit, on_batch_done=done)


def _report(summary: dict) -> str:
    from rft.tasks.arithmetic.evaluate import format_report

    return format_report(summary)


def _main(argv: list[str]) -> int:
    from rft.tasks.arithmetic.evaluate import main

    return main(argv)


def _headline(summary: dict) -> tuple[str, list[bool], bool]:
    """Accuracy on the problems, the same problems for every model."""
    return "accuracy", [d["rewards"]["correct_answer"] == 1.0 for d in summary["details"]], True


# Held-out rows are the evaluator's problems (seed 0), so a run's periodic evaluation and
# `python -m rft eval arithmetic` see the same ones.
TASKS = (
    Task("arithmetic", rows=lambda data: problems.training_rows(),
         held_out_rows=lambda data, count: [problems.make_row(e) for e in evaluation_problems(count, seed=0)],
         recipe=recipes.arithmetic, variants={"arithmetic-zero": recipes.arithmetic_zero},
         demonstration=lambda row, tokenizer: problems.demonstration_for_row(row),
         evaluator=Evaluator("problems", _evaluate, _report, "--problems", _headline, _main)),
    Task("arithmetic-tools",
         rows=lambda data: [problems.make_tool_row(row["expression"]) for row in problems.training_rows()],
         held_out_rows=lambda data, count: [problems.make_tool_row(e) for e in evaluation_problems(count, seed=0)],
         recipe=recipes.arithmetic_tools, demonstration=lambda row, tokenizer: problems.tool_demonstration(row)),
)
