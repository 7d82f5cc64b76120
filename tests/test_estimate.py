"""The Train tab's time estimate: earlier runs' measured speed, scaled to the new config."""

import pytest

from rft.config import DataConfig, RunConfig, SamplingConfig, ScheduleConfig, SFTConfig
from rft.estimate import estimate_run
from rft.runs import RunWriter
from rft.train_form import launch_summary


def write_run(root, name, config, step_seconds, mean_length, sft_step_seconds=None):
    writer = RunWriter(root / name)
    writer.create(config)
    for step in range(1, 6):
        writer.append_metrics({"step": step, "time/step": step_seconds, "completion_length/mean": mean_length})
        if sft_step_seconds:
            writer.append_sft_metrics({"step": step, "time/step": sft_step_seconds, "loss": 1.0})


def test_no_earlier_run_no_estimate_and_the_summary_says_how_to_get_one(tmp_path):
    config = RunConfig()
    assert estimate_run(config, tmp_path) is None
    assert "Quick try" in launch_summary(config, tmp_path)


def test_the_estimate_scales_the_measured_seconds_per_token_to_the_new_batch(tmp_path):
    # Measured: 16 completions of 32 tokens (half the 64-token limit) in 8 s a step: 1/64 s a token;
    # SFT steps of 8 demonstrations in 4 s: 0.5 s a demonstration.
    measured = RunConfig(data=DataConfig(preset="arithmetic"), sampling=SamplingConfig(max_completion_length=64),
                         sft=SFTConfig(enabled=True, batch_size=8))
    measured.optim.prompts_per_step, measured.sampling.num_generations = 2, 8
    write_run(tmp_path, "earlier", measured, step_seconds=8.0, mean_length=32.0, sft_step_seconds=4.0)

    planned = RunConfig(data=DataConfig(preset="arithmetic"), sampling=SamplingConfig(max_completion_length=128),
                        schedule=ScheduleConfig(max_steps=10), sft=SFTConfig(enabled=True, examples=100))
    planned.optim.prompts_per_step, planned.sampling.num_generations = 4, 8
    estimate = estimate_run(planned, tmp_path)
    # 10 steps x 32 completions x (128 x 0.5) tokens x 1/64 s = 320 s; 100 demonstrations x 0.5 s = 50 s.
    assert estimate.grpo_s == pytest.approx(320.0) and estimate.sft_s == pytest.approx(50.0)
    assert estimate.source == "earlier" and "about 6m 10s" in estimate.describe()

    other_model = RunConfig(data=DataConfig(preset="arithmetic"))
    other_model.model.name_or_path = "/models/another"
    assert estimate_run(other_model, tmp_path) is None  # another model's speed says nothing
