"""Tasks: everything one problem brings, behind one interface.

A task is its training rows, its held-out rows (never trained on), its recipe (a complete RunConfig:
reward code, an environment when it is interactive, hyperparameters) and any variants of it, the
demonstrations of its SFT warm start, and optionally an evaluator of its own. The trainer, the
dashboard and the CLI reach a task only through `task(name)`, never by its name, so a new task is a
folder whose task.py defines its Task objects (TASKS), listed in `_TASK_MODULES`:

    wordle/          the course's Wordle: game states answered once (wordle), and whole games played
                     in an environment (wordle-game); both use one game, one solver, one set of rewards
    arithmetic/      generated integer arithmetic, answered once or with a calculator tool
    reasoning_gym/   any of reasoning-gym's generators, as rg:<name>

A dataset file (data.path) is not a task: its rows, rewards and held-out rows come from the config.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field

from rft.config import DataConfig, RunConfig

_TASK_MODULES = ("rft.tasks.wordle.task", "rft.tasks.arithmetic.task")
LIBRARY_PREFIX = "rg:"  # rg:<name>: a reasoning-gym task, made on demand (reasoning_gym.task)

# (dataset row, the model's tokenizer) -> the completion to learn, or the conversation after the
# prompt ({"role": "assistant" | "user" | "tool", "content"} messages) for a task played in an environment
Demonstrate = Callable[[dict, object], "str | list[dict]"]


class UnknownTask(ValueError):
    """A task name that no task has; the message says which names there are."""


@dataclass(frozen=True)
class Evaluator:
    """A task's own evaluation on its held-out items (Wordle's games, arithmetic's problems)."""

    unit: str  # what the count counts, e.g. "games"
    evaluate: Callable  # (model, tokenizer, count, seed, max_new_tokens=None, on_progress=None) -> summary dict
    report: Callable[[dict], str]  # the summary as a table
    count_option: str  # the CLI's option for the count, e.g. "--games"
    # The rate the task is judged by: summary -> (its name, one outcome per item, whether the items
    # are the same for every model evaluated: a sweep's paired or unpaired interval of a change)
    headline: Callable[[dict], tuple[str, list[bool], bool]]
    main: Callable[[list[str]], int]  # `python -m rft eval <task> ...`


@dataclass(frozen=True)
class Task:
    name: str  # the dataset preset's name (data.preset), and its recipe's
    rows: Callable[[DataConfig], list[dict]]  # the training rows
    held_out_rows: Callable[[DataConfig, int], list[dict]]  # the first N held-out rows, never among the training rows
    recipe: Callable[[], RunConfig]
    variants: dict[str, Callable[[], RunConfig]] = field(default_factory=dict)  # other named recipes of the task
    demonstration: Demonstrate | None = None  # for the SFT warm start
    evaluator: Evaluator | None = None


def task(name: str | None) -> Task | None:
    """The task a dataset preset names (rg:<name> for reasoning-gym's); None for any other name."""
    if not name:
        return None
    if name.startswith(LIBRARY_PREFIX):
        from rft.tasks import reasoning_gym

        return reasoning_gym.task(name)
    return _built_in().get(name)


def built_in_names() -> list[str]:
    """The project's own tasks, in the order the Train tab lists them."""
    return list(_built_in())


def recipes() -> dict[str, Callable[[], RunConfig]]:
    """Every named recipe of the built-in tasks: each task's own, then its variants."""
    named = {}
    for each in _built_in().values():
        named[each.name] = each.recipe
        named.update(each.variants)
    return named


@functools.cache
def _built_in() -> dict[str, Task]:
    return {each.name: each for module in _TASK_MODULES for each in importlib.import_module(module).TASKS}
