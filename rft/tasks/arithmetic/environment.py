"""Arithmetic with a calculator tool, as an environment (the arithmetic-tools preset).

The model may call the calculator in plain text, `<calculator> 18 * 4 + 37 </calculator>`, and gets
its value back as a tool message; it ends the episode with `<answer> number </answer>`. The
bundled model's chat template has no tool format, so the call is text the environment reads, and
the result comes back in a "tool" turn (rendered by the template like any other role).

This file is environment code: it runs on its own in the environment worker (standard library only).
"""

import ast
import operator
import re

CALL_PATTERN = r"<calculator>(.*?)</calculator>"
ANSWER_PATTERN = r"<answer>\s*(-?\d+)\s*</answer>"
OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
             ast.FloorDiv: operator.floordiv, ast.USub: operator.neg}


class Calculator:
    """Answer the row's expression; a calculator answers <calculator> expression </calculator> calls."""

    def reset(self, example):
        self.calls = 0
        return None

    def step(self, reply):
        if re.search(ANSWER_PATTERN, reply):
            return None
        call = re.search(CALL_PATTERN, reply, re.DOTALL)
        if call is None:
            return None  # neither a call nor an answer: the episode is over, and scores no answer
        self.calls += 1
        return {"role": "tool", "content": _calculate(call.group(1))}


def _calculate(expression: str) -> str:
    """The integer value of `expression` (+, -, *, //, parentheses), or what is wrong with it."""
    try:
        return str(_value(ast.parse(expression.strip(), mode="eval").body))
    except (SyntaxError, ValueError, ZeroDivisionError) as exc:
        return f"error: {exc or 'not an expression of integers with + - * //'}"


def _value(node):
    if isinstance(node, ast.Constant) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in OPERATORS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Mult) and max(abs(left), abs(right)) > 10**9:
            raise ValueError("numbers too large")
        return OPERATORS[type(node.op)](left, right)
    if isinstance(node, ast.UnaryOp) and type(node.op) in OPERATORS:
        return OPERATORS[type(node.op)](_value(node.operand))
    raise ValueError("only integers with + - * // and parentheses")
