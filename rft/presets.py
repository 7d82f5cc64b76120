"""Recipe presets: a complete RunConfig by name (dataset, reward code, environment, hyperparameters):
each task's own recipe, named like the task, and its variants (rft.tasks)."""

from __future__ import annotations

from rft import tasks
from rft.config import ConfigError, RunConfig


def preset_config(name: str) -> RunConfig:
    """The named recipe: a task's own (wordle, rg:countdown, ...) or one of its variants (wordle-guarded)."""
    if name.startswith(tasks.LIBRARY_PREFIX):
        return tasks.task(name).recipe()
    recipes = tasks.recipes()
    if name not in recipes:
        raise ConfigError([f"unknown preset {name!r}; choose one of {', '.join(recipes)}, or a reasoning-gym task "
                           "as rg:<task> (e.g. rg:chain_sum)"])
    return recipes[name]()
