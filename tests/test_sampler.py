"""Rollouts: masks, the shared-prompt KV cache, and log-probs equal to a plain full forward pass."""

import pytest
import torch

from rft.config import SamplingConfig
from rft.data import render_prompt
from rft.grpo.sampler import Rollout, completion_logprobs, completion_mask_from_ids, positions_from_mask, sample_group
from rft.models import load_for_inference

PROMPTS = ["Hi", "Write a long and careful answer about the history of the number zero, please."]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    model, tokenizer = load_for_inference(str(tiny_model_dir))
    texts = [render_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
    return model, tokenizer, texts


def test_completion_mask_covers_up_to_the_first_eos():
    eos = 2
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    mask, truncated = completion_mask_from_ids(ids, [eos])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False]


def test_sample_group_shapes_and_padding(tiny):
    model, tokenizer, texts = tiny
    torch.manual_seed(0)
    rollout = sample_group(model, tokenizer, texts, SamplingConfig(num_generations=3, max_completion_length=12))
    assert rollout.prompt_ids.shape[0] == 2 and rollout.group_size == 3
    assert rollout.completion_ids.shape[0] == 6 and rollout.completion_ids.shape[1] <= 12
    assert len(rollout.completions) == 6
    padded = rollout.completion_mask == 0
    assert (rollout.completion_ids[padded] == tokenizer.pad_token_id).all()
    assert rollout.generate_seconds > 0


def naive_logprobs(model, rollout: Rollout, temperature: float) -> torch.Tensor:
    """The textbook computation: every row's full prompt + completion in one forward pass."""
    group = rollout.group_size
    input_ids = torch.cat([rollout.prompt_ids.repeat_interleave(group, 0), rollout.completion_ids], 1)
    attention_mask = torch.cat([rollout.prompt_mask.repeat_interleave(group, 0), rollout.completion_mask.long()], 1)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions_from_mask(attention_mask)).logits
    completion_logits = logits[:, rollout.prompt_ids.shape[1] - 1 : -1] / temperature
    return torch.log_softmax(completion_logits.float(), -1).gather(-1, rollout.completion_ids[..., None]).squeeze(-1)


def test_shared_prompt_logprobs_equal_the_full_forward_pass(tiny):
    model, tokenizer, texts = tiny
    torch.manual_seed(1)
    rollout = sample_group(model, tokenizer, texts, SamplingConfig(num_generations=3, max_completion_length=10))
    with torch.no_grad():
        shared, entropy = completion_logprobs(model, rollout, temperature=0.7, with_entropy=True)
        expected = naive_logprobs(model, rollout, temperature=0.7)
    mask = rollout.completion_mask.bool()
    assert torch.allclose(shared[mask], expected[mask], atol=1e-4)
    assert entropy.shape == shared.shape and (entropy[mask] > 0).all()


def test_gradients_flow_through_the_shared_prompt(tiny_model_dir):
    from rft.config import LoraConfig
    from rft.models import wrap_with_lora

    model, tokenizer = load_for_inference(str(tiny_model_dir))
    model = wrap_with_lora(model, LoraConfig(rank=4, alpha=8, target_modules="k_proj,v_proj"))
    text = render_prompt(tokenizer, [{"role": "user", "content": "Hello there"}])
    torch.manual_seed(2)
    rollout = sample_group(model, tokenizer, [text], SamplingConfig(num_generations=2, max_completion_length=6))
    with torch.no_grad():  # make lora_B non-zero so lora_A receives gradient too
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    logp, _ = completion_logprobs(model, rollout, temperature=1.0)
    logp.sum().backward()
    # k/v projections only matter through the cache: a gradient here proves it flows through it
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_completions_run_longest_first_in_passes_with_the_same_values_and_gradients(tiny_model_dir, monkeypatch):
    """Passes of 2 rows, each padded to its own longest (one row of a single token), give the
    values and LoRA gradients of one pass over all rows padded to the longest, and of the full
    forward pass; the positions after a row's end are 0."""
    from rft import generation
    from rft.config import LoraConfig
    from rft.grpo import sampler
    from rft.models import wrap_with_lora

    model, tokenizer = load_for_inference(str(tiny_model_dir))
    model = wrap_with_lora(model, LoraConfig(rank=4, alpha=8, target_modules="q_proj,v_proj"))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    texts = [render_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
    prompt_ids, prompt_mask = generation.pack_prompts([tokenizer(t).input_ids for t in texts], tokenizer.pad_token_id)
    torch.manual_seed(3)
    lengths = torch.tensor([1, 5, 3, 7, 2, 6])  # G = 3 for each of the 2 prompts
    completion_mask = (torch.arange(7)[None, :] < lengths[:, None]).float()
    completion_ids = torch.where(completion_mask.bool(), torch.randint(3, 200, (6, 7)), tokenizer.pad_token_id)
    rollout = Rollout(prompt_ids, prompt_mask, 3, completion_ids, completion_mask, [""] * 6,
                      torch.zeros(6, dtype=torch.bool), 0.0)
    weights = torch.randn(6, 7)

    def logprobs_and_gradients(rows_per_pass: int):
        monkeypatch.setattr(sampler, "ROWS_PER_PASS", rows_per_pass)
        logp, entropy = completion_logprobs(model, rollout, temperature=0.7, with_entropy=True)
        (logp * weights * completion_mask).sum().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        return logp, entropy, grads

    split_logp, split_entropy, split_grads = logprobs_and_gradients(2)
    whole_logp, whole_entropy, whole_grads = logprobs_and_gradients(64)
    with torch.no_grad():
        expected = naive_logprobs(model, rollout, temperature=0.7)

    mask = completion_mask.bool()
    assert torch.allclose(split_logp[mask], whole_logp[mask], atol=1e-5)
    assert torch.allclose(split_logp[mask], expected[mask], atol=1e-4)
    assert torch.allclose(split_entropy[mask], whole_entropy[mask], atol=1e-5)
    assert (split_logp[~mask] == 0).all() and (split_entropy[~mask] == 0).all()
    assert split_grads.keys() == whole_grads.keys() and split_grads
    for name, grad in whole_grads.items():
        assert (split_grads[name] - grad).norm() <= 1e-4 * grad.norm(), name


def test_a_cpu_model_attends_with_grouped_heads_and_a_mask_as_eager_attention_does(tiny, monkeypatch):
    """A CPU model is loaded with transformers' switch for SDPA's grouped-query attention under a mask
    (no copy of the keys and values per query head); padded rows' logits and gradients then equal
    those of eager attention, which copies them."""
    import os

    from transformers.integrations import sdpa_attention

    model, tokenizer, texts = tiny
    assert os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA") == "1"
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    torch.manual_seed(4)
    rollout = sample_group(model, tokenizer, texts, SamplingConfig(num_generations=2, max_completion_length=8))
    assert not rollout.prompt_mask.all()  # the short prompt is padded: a mask is given

    def logprobs_and_embedding_gradient(implementation: str):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        logp = naive_logprobs(model, rollout, temperature=1.0)
        logp[rollout.completion_mask.bool()].sum().backward()
        return logp.detach(), model.get_input_embeddings().weight.grad.clone()

    def no_copies(*args):
        raise AssertionError("SDPA's keys and values were copied for each query head")

    model.requires_grad_(True)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(sdpa_attention, "repeat_kv", no_copies)
            grouped = logprobs_and_embedding_gradient("sdpa")
        eager = logprobs_and_embedding_gradient("eager")
    finally:
        model.set_attn_implementation("sdpa")
        model.requires_grad_(False)
        model.zero_grad()
    mask = rollout.completion_mask.bool()
    assert torch.allclose(grouped[0][mask], eager[0][mask], atol=1e-5)
    assert torch.allclose(grouped[1], eager[1], atol=1e-5)
