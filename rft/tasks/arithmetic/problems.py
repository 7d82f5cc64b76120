"""Generated arithmetic problems: the prompt, the training rows, the held-out set, demonstrations.

A problem is an expression of two or three positive integers joined by +, - or *, such as
`37 + 18 * 4`; its answer is the integer value, multiplication first. Each row holds:

    prompt       chat messages: the instructions, the question, and a pre-filled "<think>"
    expression   the expression as shown
    answer       its value

The held-out problems come from their own fixed seed and never appear among the training rows.
"""

from __future__ import annotations

import random

SYSTEM_PROMPT = (
    "You are a careful calculator. Work out the value of the expression step by step, doing "
    "multiplication before addition and subtraction, inside <think> </think>. Then give only the "
    "final integer in the following format: <answer> number </answer>."
)
TOOL_SYSTEM_PROMPT = (
    "You are a careful calculator with a calculator tool. To use the tool, reply with only "
    "<calculator> expression </calculator>; its result comes back in the next message. When you "
    "know the value of the expression, reply with only the final integer in the following format: "
    "<answer> number </answer>."
)
# The model continues this message, so every completion starts inside the <think> block.
ASSISTANT_PREFIX = "<think>"
OPERATORS = ("+", "-", "*")
MAX_TERM = 50
MAX_FACTOR = 9  # the number right of a "*": products a small model can learn
DEFAULT_TRAINING_PROBLEMS = 2000
HELD_OUT_COUNT = 1000  # the first 200 are those of earlier versions: the same seed draws them first
HELD_OUT_SEED = 20250102  # fixed forever, so evaluations stay comparable across versions


def random_expression(rng: random.Random) -> str:
    """Two or three numbers joined by operators, e.g. "37 + 18 * 4"."""
    parts = [str(rng.randint(1, MAX_TERM))]
    for _ in range(rng.choice((1, 2))):
        operator = rng.choice(OPERATORS)
        parts += [operator, str(rng.randint(2, MAX_FACTOR) if operator == "*" else rng.randint(1, MAX_TERM))]
    return " ".join(parts)


def worked_steps(expression: str) -> tuple[list[str], int]:
    """The steps of working out `expression` ("18 * 4 = 72", then "37 + 72 = 109") and its value."""
    tokens = expression.split()
    steps = []
    # Multiplications first, left to right, each replaced by its product.
    while "*" in tokens:
        at = tokens.index("*")
        left, right = int(tokens[at - 1]), int(tokens[at + 1])
        steps.append(f"{left} * {right} = {left * right}")
        tokens[at - 1:at + 2] = [str(left * right)]
    value = int(tokens[0])
    for operator, number in zip(tokens[1::2], tokens[2::2]):
        result = value + int(number) if operator == "+" else value - int(number)
        steps.append(f"{value} {operator} {number} = {result}")
        value = result
    return steps, value


def build_messages(expression: str) -> list[dict]:
    """[system, user, assistant prefix]: chat messages whose last message the model continues."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"What is {expression}?"},
        {"role": "assistant", "content": ASSISTANT_PREFIX},
    ]


def make_row(expression: str) -> dict:
    return {"prompt": build_messages(expression), "expression": expression, "answer": worked_steps(expression)[1]}


def make_tool_row(expression: str) -> dict:
    """A row of the arithmetic-tools preset: the calculator's instructions, then the question."""
    messages = [{"role": "system", "content": TOOL_SYSTEM_PROMPT}, {"role": "user", "content": f"What is {expression}?"}]
    return {"prompt": messages, "expression": expression, "answer": worked_steps(expression)[1]}


def held_out_problems(n: int | None = None) -> list[str]:
    """The evaluation expressions (the first `n`; all of them when None), always the same."""
    rng = random.Random(HELD_OUT_SEED)
    expressions: list[str] = []
    while len(expressions) < HELD_OUT_COUNT:
        expression = random_expression(rng)
        if expression not in expressions:
            expressions.append(expression)
    return expressions if n is None else expressions[:n]


def training_rows(count: int = DEFAULT_TRAINING_PROBLEMS, seed: int = 0) -> list[dict]:
    """`count` distinct problems drawn with `seed`, none of them held out."""
    rng = random.Random(seed)
    excluded = set(held_out_problems())
    rows = []
    while len(rows) < count:
        expression = random_expression(rng)
        if expression not in excluded:
            excluded.add(expression)
            rows.append(make_row(expression))
    return rows


def demonstration(expression: str) -> str:
    """The completion that works `expression` out, in the format answer_format gives 1.0."""
    steps, value = worked_steps(expression)
    return f" {'. '.join(steps)}.\n</think>\n<answer>{value}</answer>"


def demonstration_for_row(row: dict) -> str:
    return demonstration(row["expression"])


def tool_demonstration(row: dict) -> list[dict]:
    """The conversation of a calculator user: the whole expression to the tool, its value as the answer."""
    value = str(worked_steps(row["expression"])[1])
    return [{"role": "assistant", "content": f"<calculator> {row['expression']} </calculator>"},
            {"role": "tool", "content": value},
            {"role": "assistant", "content": f"<answer> {value} </answer>"}]
