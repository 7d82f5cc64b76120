"""Recipe presets: a complete RunConfig for a task (dataset, reward code, hyperparameters)."""

from __future__ import annotations

from collections.abc import Callable

from rft.config import ConfigError, DataConfig, GRPOConfig, OptimConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig


def wordle() -> RunConfig:
    """The course's Wordle task: its prompt format and its three reward functions."""
    from rft.wordle import reward_source

    return RunConfig(
        name="wordle",
        data=DataConfig(preset="wordle", max_prompt_length=1024),
        rewards=RewardsConfig(source=reward_source()),
        sampling=SamplingConfig(num_generations=8, max_completion_length=128, temperature=1.0),
        grpo=GRPOConfig(beta=0.04, loss_type="grpo"),
        optim=OptimConfig(learning_rate=5e-5, prompts_per_step=1),
        schedule=ScheduleConfig(max_steps=100, save_every=25),
    )


PRESETS: dict[str, Callable[[], RunConfig]] = {"wordle": wordle}


def preset_config(name: str) -> RunConfig:
    if name not in PRESETS:
        raise ConfigError([f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}"])
    return PRESETS[name]()
