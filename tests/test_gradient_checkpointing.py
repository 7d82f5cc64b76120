"""Gradient checkpointing: the same log-probabilities and gradients as without it, with the shared
prompt still computed once, and whole GRPO and SFT runs that use it."""

import pytest
import torch

from rft.config import LoraConfig, ModelConfig, SamplingConfig
from rft.data import render_prompt
from rft.grpo.sampler import completion_logprobs, sample_group
from rft.grpo.trainer import train
from rft.models import cpu_has_native_bf16, load_base_model, load_tokenizer, wrap_with_lora
from rft.runs import read_metrics, read_sft_metrics, read_status
from test_sft import arithmetic_config
from test_trainer_e2e import prompts_file, tiny_config  # noqa: F401 (a fixture)

PROMPTS = ["Hi", "Write a long and careful answer about the history of the number zero, please."]


def logprobs_and_gradients(model_dir, gradient_checkpointing: bool):
    """One seeded rollout's log-probs and LoRA gradients, in training mode."""
    tokenizer = load_tokenizer(str(model_dir))
    base = load_base_model(ModelConfig(name_or_path=str(model_dir), gradient_checkpointing=gradient_checkpointing))
    torch.manual_seed(0)
    model = wrap_with_lora(base, LoraConfig(rank=4, alpha=8))
    with torch.no_grad():  # lora_B non-zero, so every LoRA matrix receives a gradient
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    texts = [render_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
    torch.manual_seed(3)
    model.eval()
    rollout = sample_group(model, tokenizer, texts, SamplingConfig(num_generations=3, max_completion_length=10))
    model.train()
    logp, _ = completion_logprobs(model, rollout, temperature=1.0)
    (logp * rollout.completion_mask).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return rollout, logp.detach(), grads


def test_checkpointing_gives_the_same_logprobs_and_gradients(tiny_model_dir):
    rollout, logp, grads = logprobs_and_gradients(tiny_model_dir, gradient_checkpointing=False)
    checkpointed_rollout, checkpointed_logp, checkpointed_grads = logprobs_and_gradients(tiny_model_dir, True)

    assert torch.equal(rollout.completion_ids, checkpointed_rollout.completion_ids)
    mask = rollout.completion_mask.bool()
    assert torch.allclose(checkpointed_logp[mask], logp[mask], atol=1e-5)
    assert grads.keys() == checkpointed_grads.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert grad.abs().sum() > 0, name
        assert torch.allclose(checkpointed_grads[name], grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.slow
def test_a_grpo_run_with_checkpointing(tmp_path, tiny_model_dir, prompts_file):
    config = tiny_config(tiny_model_dir, prompts_file, set=["model.gradient_checkpointing=true", "grpo.beta=0.04"])
    run_dir = train(config, tmp_path / "run", progress=False)

    assert read_status(run_dir)["state"] == "finished"
    metrics = read_metrics(run_dir)
    assert metrics["step"].tolist() == [1, 2, 3]
    assert (metrics["grad_norm"] > 0).all()
    log = (run_dir / "logs.txt").read_text()
    assert "generation: the rollout decode loop" in log
    assert ("linear layers in bf16" in log) == cpu_has_native_bf16()  # model.dtype auto: where the CPU has it


@pytest.mark.slow
def test_an_sft_warm_start_with_checkpointing(tmp_path, tiny_model_dir):
    config = arithmetic_config(tiny_model_dir, epochs=1.0).with_overrides(["model.gradient_checkpointing=true"])
    run_dir = train(config, tmp_path / "run", progress=False)

    assert read_status(run_dir)["state"] == "finished"
    assert len(read_sft_metrics(run_dir)) == 4
    assert read_metrics(run_dir)["step"].tolist() == [1, 2]
