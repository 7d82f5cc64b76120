"""Log-probabilities through the LM head a chunk at a time: the same values and gradients as the
full-vocabulary logits of the whole batch."""

import pytest
import torch

from rft import lm_head
from rft.config import LoraConfig
from rft.grpo.loss import token_entropy, token_logprobs
from rft.models import load_for_inference, wrap_with_lora


def lora_model(tiny_model_dir):
    model, _ = load_for_inference(str(tiny_model_dir))
    model = wrap_with_lora(model, LoraConfig(rank=4, alpha=8, target_modules="q_proj,v_proj,lm_head"))
    with torch.no_grad():  # a non-zero adapter, so that every LoRA weight gets a gradient
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.1)
    model.train()
    return model


def gradients(model) -> dict[str, torch.Tensor]:
    grads = {name: param.grad.clone() for name, param in model.named_parameters() if param.grad is not None}
    model.zero_grad()
    return grads


def test_chunked_head_gives_the_full_logits_values_and_gradients(tiny_model_dir, monkeypatch):
    model = lora_model(tiny_model_dir)
    torch.manual_seed(0)
    input_ids = torch.randint(3, 200, (3, 9))
    targets = torch.randint(3, 200, (3, 9))

    logits = model(input_ids=input_ids).logits / 0.7
    full_logp = token_logprobs(logits, targets)
    full_entropy = token_entropy(logits)
    (full_logp.sum() + full_entropy.sum()).backward()
    full_grads = gradients(model)

    monkeypatch.setattr(lm_head, "CHUNK_POSITIONS", 5)  # 27 positions: six chunks, the last one short
    states, head = lm_head.final_states(model, input_ids=input_ids)
    assert states.shape[-1] == model.config.hidden_size  # the logits were never made whole
    logp, entropy = lm_head.head_logprobs(states, head, targets, 0.7, with_entropy=True, entropy_grad=True)
    (logp.sum() + entropy.sum()).backward()
    chunked_grads = gradients(model)

    assert torch.allclose(logp, full_logp, atol=1e-5) and torch.allclose(entropy, full_entropy, atol=1e-5)
    assert chunked_grads.keys() == full_grads.keys() and any("lm_head" in name for name in full_grads)
    for name, grad in full_grads.items():
        assert (chunked_grads[name] - grad).norm() <= 1e-4 * grad.norm(), name  # float rounding only


def test_a_model_with_transformed_logits_keeps_its_own_logits(tiny_model_dir):
    model, _ = load_for_inference(str(tiny_model_dir))
    input_ids = torch.randint(3, 200, (2, 4))
    model.config.final_logit_softcapping = 30.0  # as Gemma 2's config says
    states, head = lm_head.final_states(model, input_ids=input_ids)
    assert head is lm_head.identity and states.shape[-1] == model.config.vocab_size
    logp, entropy = lm_head.head_logprobs(states, head, input_ids)
    assert entropy is None and torch.allclose(logp, token_logprobs(model(input_ids=input_ids).logits, input_ids))


@pytest.mark.parametrize("keep_softmax_bytes", [lm_head.KEEP_SOFTMAX_BYTES, 0], ids=["softmax kept", "recomputed"])
def test_a_plain_linear_head_has_the_full_logits_values_and_gradients(monkeypatch, keep_softmax_bytes):
    """The hand-written backward of a plain head (LinearTokenLogprobs) against autograd through the
    whole batch's logits: states, weight and bias gradients, with a temperature, the softmax kept
    from the forward pass or recomputed."""
    monkeypatch.setattr(lm_head, "KEEP_SOFTMAX_BYTES", keep_softmax_bytes)
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 300)
    states = torch.randn(2, 11, 16, requires_grad=True)
    targets = torch.randint(0, 300, (2, 11))
    upstream = torch.randn(2, 11)  # a loss that weighs each position differently, as GRPO's does

    logits = head(states) / 0.7
    full_logp = token_logprobs(logits, targets)
    (full_logp * upstream).sum().backward()
    full = [t.grad.clone() for t in (states, head.weight, head.bias)]
    for t in (states, head.weight, head.bias):
        t.grad = None

    monkeypatch.setattr(lm_head, "CHUNK_POSITIONS", 4)  # 22 positions: six chunks, the last one short
    logp, entropy = lm_head.head_logprobs(states, head, targets, 0.7, with_entropy=True)
    (logp * upstream).sum().backward()

    assert torch.allclose(logp, full_logp, atol=1e-5)
    assert torch.allclose(entropy, token_entropy(logits.detach()), atol=1e-5) and not entropy.requires_grad
    for fused_grad, full_grad in zip((states.grad, head.weight.grad, head.bias.grad), full, strict=True):
        assert (fused_grad - full_grad).norm() <= 1e-5 * full_grad.norm()


def test_a_plain_linear_head_under_bf16_autocast_multiplies_in_bf16(monkeypatch):
    """Under autocast the head's product runs in bf16 as autograd's would (same rounding, not fp32)."""
    torch.manual_seed(0)
    head = torch.nn.Linear(64, 500, bias=False).requires_grad_(False)
    states = torch.randn(30, 64, requires_grad=True)
    targets = torch.randint(0, 500, (30,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = token_logprobs(head(states), targets)
        logp, _ = lm_head.head_logprobs(states, head, targets)
    fp32 = token_logprobs(head(states), targets)
    assert torch.allclose(logp, reference, atol=1e-4) and not torch.allclose(logp, fp32, atol=1e-4)
    logp.sum().backward()
    assert states.grad.dtype == torch.float32 and states.grad.abs().sum() > 0
