"""The work both trainers do in one comparison, defined once so that it is the same for each.

A workload is the Wordle preset's first prompts in dataset order (one per step), the course's
three reward functions, and the GRPO hyperparameters below. Each trainer runs it in a fresh
process (see child.py) and reports one timing record per step, warm-up steps included.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rft import data as datasets
from rft.tasks import wordle
from rft.config import BUNDLED_MODEL, DataConfig


@dataclass(frozen=True)
class Workload:
    num_generations: int = 8  # G: completions per prompt
    completion_length: int = 64  # max completion tokens
    steps: int = 5  # measured steps, after the warm-up
    warmup_steps: int = 1  # excluded from the figures: first-call costs (allocations, lazy imports)
    prompts_per_step: int = 1
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_targets: str = "all-linear"
    beta: float = 0.04
    use_bias_correction_kl: bool = True  # TRL 1.16's default, and this trainer's
    loss_type: str = "grpo"
    learning_rate: float = 5e-5
    temperature: float = 1.0
    seed: int = 0
    model: str = BUNDLED_MODEL

    @property
    def total_steps(self) -> int:
        return self.warmup_steps + self.steps

    @property
    def prompt_count(self) -> int:
        return self.total_steps * self.prompts_per_step

    def label(self) -> str:
        return f"G={self.num_generations}, {self.completion_length} tokens"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Workload":
        return cls(**values)


def wordle_reward_source() -> str:
    return wordle.reward_source()


def wordle_data_config(workload: Workload) -> DataConfig:
    """The Wordle dataset's first rows in their stored order, one per step."""
    return DataConfig(preset="wordle", shuffle=False, limit=workload.prompt_count)


def wordle_prompts(tokenizer, workload: Workload) -> list[dict]:
    """The workload's rows as {"prompt": rendered prompt text, **other columns}.

    Rendered exactly as this project's trainer renders them (the assistant's pre-filled "<think>"
    is continued, not closed), so both trainers tokenise the same text.
    """
    data_config = wordle_data_config(workload)
    rows = datasets.load_rows(data_config)
    return [
        {"prompt": datasets.render_prompt(tokenizer, datasets.to_messages(row, data_config)),
         **datasets.example_of(row, data_config)}
        for row in rows
    ]
