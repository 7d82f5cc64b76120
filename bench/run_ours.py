"""This project's trainer on a benchmark workload, timed by its own per-step metrics rows."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from bench import child
from bench.workload import Workload, wordle_data_config, wordle_reward_source
from rft.config import (
    GRPOConfig,
    LoraConfig,
    ModelConfig,
    OptimConfig,
    RewardsConfig,
    RunConfig,
    SamplingConfig,
    ScheduleConfig,
    SFTConfig,
)
from rft import models
from rft.grpo.trainer import train
from rft.runs import read_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]


def ours_config(workload: Workload) -> RunConfig:
    """The workload as a run configuration. Built field by field rather than from the Wordle
    preset, whose recipe (an SFT warm start, its own group size and learning rate) may change."""
    return RunConfig(
        name="bench",
        # TRL's dtype, named: "auto" would add bf16 autocast on a CPU with native bf16, and TRL runs without.
        model=ModelConfig(name_or_path=workload.model, gradient_checkpointing=False,
                          dtype=str(models.choose_dtype(models.choose_device("auto"))).removeprefix("torch.")),
        lora=LoraConfig(rank=workload.lora_rank, alpha=workload.lora_alpha, dropout=0.0,
                        target_modules=workload.lora_targets),
        data=wordle_data_config(workload),
        rewards=RewardsConfig(source=wordle_reward_source()),
        sampling=SamplingConfig(num_generations=workload.num_generations,
                                max_completion_length=workload.completion_length,
                                temperature=workload.temperature, top_p=1.0, top_k=0),
        grpo=GRPOConfig(beta=workload.beta, use_bias_correction_kl=workload.use_bias_correction_kl,
                        loss_type=workload.loss_type, num_iterations=1, scale_rewards="group"),
        optim=OptimConfig(learning_rate=workload.learning_rate, lr_scheduler="constant",
                          prompts_per_step=workload.prompts_per_step, gradient_accumulation_steps=1),
        # Only the final checkpoint, written after the last step is timed.
        schedule=ScheduleConfig(max_steps=workload.total_steps, save_every=0, seed=workload.seed),
        sft=SFTConfig(enabled=False),  # TRL's GRPOTrainer has no warm start: GRPO steps only
    ).validate()


def working_tree_revision() -> str:
    """The commit the trainer's code comes from, marked "+changes" when rft/ differs from it."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    return commit + ("+changes" if git("status", "--porcelain", "--", "rft") else "")


def run(workload: Workload) -> dict:
    with tempfile.TemporaryDirectory(prefix="rft-bench-") as run_dir:
        train(ours_config(workload), run_dir, progress=False)
        rows = read_metrics(run_dir).to_dict("records")
    return {
        "trainer": "rft",
        "version": working_tree_revision(),
        "steps": [
            {
                "step_s": row["time/step"],
                "generate_s": row["time/generate"],
                "score_s": row["time/score"],
                "train_s": row["time/train"],
                "completion_tokens": row["tokens_generated"],
                "peak_memory_mb": row["memory/peak_mb"],
            }
            for row in rows
        ],
    }


if __name__ == "__main__":
    child.main(run)
