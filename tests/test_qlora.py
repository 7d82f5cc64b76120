"""4-bit QLoRA (model.load_in_4bit): the base's linear layers load as bitsandbytes NF4, the rollout
generator and the trainer's log-probabilities agree with a plain forward of that model, a GRPO run
trains the adapter on it, a merged export uses the unquantised base, and a missing bitsandbytes is
refused with the command that installs it."""

import importlib.util

import pytest
import torch
from bitsandbytes.nn import Linear4bit

from rft import generation
from rft.config import LoraConfig, ModelConfig, SamplingConfig
from rft.data import render_prompt
from rft.export import export_adapter
from rft.grpo.sampler import completion_logprobs, sample_group
from rft.grpo.trainer import train
from rft.models import ModelLoadError, load_base_model, load_tokenizer, wrap_with_lora
from rft.runs import read_metrics, read_status
from test_sampler import naive_logprobs
from test_trainer_e2e import prompts_file, tiny_config  # noqa: F401 (a fixture)

PROMPTS = ["Hi", "Write a long and careful answer about the history of the number zero, please."]


def four_bit_policy(model_dir):
    base = load_base_model(ModelConfig(name_or_path=str(model_dir), load_in_4bit=True))
    torch.manual_seed(0)
    model = wrap_with_lora(base, LoraConfig(rank=4, alpha=8))
    with torch.no_grad():  # lora_B non-zero, so the adapter changes the outputs and receives gradients
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    return model


def test_the_base_loads_in_4bit_and_the_trainers_logprobs_equal_a_plain_forward(tiny_model_dir):
    model = four_bit_policy(tiny_model_dir)
    quantised = [m for m in model.modules() if isinstance(m, Linear4bit)]
    assert len(quantised) == 2 * 7  # q, k, v, o, gate, up, down in each of the tiny model's two layers
    assert all(m.weight.dtype == torch.uint8 for m in quantised)
    assert generation._packable_linears(model) == []  # packed fp32 copies would undo the quantisation

    tokenizer = load_tokenizer(str(tiny_model_dir))
    texts = [render_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
    torch.manual_seed(3)
    model.eval()
    rollout = sample_group(model, tokenizer, texts, SamplingConfig(num_generations=3, max_completion_length=10))
    model.train()
    logp, _ = completion_logprobs(model, rollout, temperature=1.0)

    with torch.no_grad():
        plain = naive_logprobs(model, rollout, temperature=1.0)
    mask = rollout.completion_mask.bool()
    assert mask.any()
    assert torch.allclose(logp.detach()[mask], plain[mask], atol=1e-4)

    (logp * rollout.completion_mask).sum().backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all("lora" in n for n, p in model.named_parameters() if p.requires_grad)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)


@pytest.mark.slow
def test_a_grpo_run_on_a_4bit_base_trains_and_exports_merged_in_full_precision(tmp_path, tiny_model_dir,
                                                                             prompts_file):
    config = tiny_config(tiny_model_dir, prompts_file,
                         set=["model.load_in_4bit=true", "model.gradient_checkpointing=true", "grpo.beta=0.04"])
    run_dir = train(config, tmp_path / "run", progress=False)

    assert read_status(run_dir)["state"] == "finished"
    metrics = read_metrics(run_dir)
    assert metrics["step"].tolist() == [1, 2, 3]
    assert (metrics["grad_norm"] > 0).all() and metrics["loss"].notna().all()
    assert "(4-bit NF4 weights, torch.float32 compute)" in (run_dir / "logs.txt").read_text()

    exported = export_adapter(run_dir, tmp_path / "export", step=2, merged=True)
    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(exported["merged_dir"])
    assert not any(isinstance(m, Linear4bit) for m in merged.modules())
    assert all(p.dtype == torch.float32 for p in merged.parameters())


def test_without_bitsandbytes_4bit_is_refused_with_the_install_command(tiny_model_dir, prompts_file, monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "bitsandbytes" else real_find_spec(name, *args))
    config = tiny_config(tiny_model_dir, prompts_file, set=["model.load_in_4bit=true"])
    assert any("model.load_in_4bit: needs bitsandbytes" in problem and "requirements-qlora.txt" in problem
               for problem in config.problems())
    with pytest.raises(ModelLoadError, match="requirements-qlora.txt"):
        load_base_model(config.model)
