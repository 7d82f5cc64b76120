"""Shared fixtures: the bundled model's tokenizer and a tiny random model built on it (tiny_model.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tiny_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The bundled SmolLM2 converted to safetensors (converted once, then cached)."""
    return tiny_model.bundled_model_dir()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_model_dir) -> Path:
    return tiny_model.build_tiny_model(tmp_path_factory.mktemp("tiny-model"), bundled_model_dir)


@pytest.fixture(scope="session")
def tiny_run_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A finished 3-step run of the tiny model with a checkpoint after every step (runs/<id>/)."""
    import json

    from rft.config import DataConfig, ModelConfig, OptimConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig
    from rft.grpo.trainer import train

    root = tmp_path_factory.mktemp("tiny-runs")
    prompts = root / "prompts.jsonl"
    # Two prompts over three steps: each prompt is rolled out at more than one step.
    prompts.write_text("".join(json.dumps({"prompt": f"Say something short, number {i}."}) + "\n" for i in range(2)))
    config = RunConfig(
        name="tiny",
        # fp32 throughout: on a CPU with native bf16 the default would train under bf16 autocast, and
        # the tests that check stored log-probabilities against a plain forward pass want them exact.
        model=ModelConfig(name_or_path=str(tiny_model_dir), device="cpu", dtype="float32"),
        data=DataConfig(preset=None, path=str(prompts), shuffle=False),
        rewards=RewardsConfig(source="def shorter_is_better(prompt, completion, example):\n"
                                     "    return -len(completion) / 20\n", timeout_s=5.0),
        sampling=SamplingConfig(num_generations=4, max_completion_length=8, top_k=10),
        optim=OptimConfig(learning_rate=1e-2),
        schedule=ScheduleConfig(max_steps=3, save_every=1),
    )
    return train(config, root / "runs" / "tiny-run", progress=False)
