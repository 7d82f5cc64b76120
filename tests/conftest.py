"""Shared fixtures: the bundled model's tokenizer and a tiny random model built on it.

The tiny model is a real Llama (2 layers, width 64) saved as an HF directory, so tests go through
the same loading, LoRA and generation paths as the bundled model, in seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The bundled SmolLM2 converted to safetensors (converted once, then cached)."""
    from rft.config import BUNDLED_MODEL
    from rft.models import resolve_model_dir

    return Path(resolve_model_dir(BUNDLED_MODEL))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_model_dir) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(bundled_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.2,  # wide enough logits that a policy can move within a few steps
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny-model")
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


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
        model=ModelConfig(name_or_path=str(tiny_model_dir), device="cpu"),
        data=DataConfig(preset=None, path=str(prompts), shuffle=False),
        rewards=RewardsConfig(source="def shorter_is_better(prompt, completion, example):\n"
                                     "    return -len(completion) / 20\n", timeout_s=5.0),
        sampling=SamplingConfig(num_generations=4, max_completion_length=8, top_k=10),
        optim=OptimConfig(learning_rate=1e-2),
        schedule=ScheduleConfig(max_steps=3, save_every=1),
    )
    return train(config, root / "runs" / "tiny-run", progress=False)
