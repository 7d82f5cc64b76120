"""Token log-probabilities for training without the whole batch's full-vocabulary logits in memory.

A causal LM's last step is a linear head from the hidden state (576 numbers a token for the
bundled model) to the vocabulary (49,152 logits a token). For training, autograd keeps those
logits for the backward pass: a Wordle episode batch of 12 conversations of ~1,300 tokens holds
3 GB of them per copy. Here the decoder returns its hidden states, and the head runs on chunks of
positions, each chunk checkpointed: its logits live only while its log-probabilities are computed,
and again in the backward pass, where they are recomputed (the head is a small part of the
model's arithmetic).

A plain linear head (the usual case: tied or untied, not itself adapted by LoRA) goes further:
its log-probabilities have a hand-written backward, d log p(token) / d logits = onehot(token) -
softmax, so a chunk's full-vocabulary work is one product and a few passes over its logits each
way, instead of autograd's recorded log-softmax, gather and their backward (zero-filled
full-vocabulary gradients, a scatter, an exp and a product each): 8% less time in an arithmetic
GRPO step's training passes (README, "Training passes"). When a call's positions are few (a GRPO
step's few hundred completion tokens), their softmax is kept for the backward pass instead of
recomputed from a second product (KEEP_SOFTMAX_BYTES).

Models whose logits are more than a linear head of the last hidden state (soft-capped or scaled
logits, wrappers around a decoder) keep the model's own logits; the chunked functions take them
with an identity head.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint

from rft.grpo.loss import token_entropy, token_logprobs

CHUNK_POSITIONS = 1024  # positions whose logits exist at once
# A plain head's softmax is kept for the backward pass instead of recomputed when a call's fits in
# this many bytes (1,365 positions of a 49,152-token vocabulary): a GRPO step's usual few hundred
# completion tokens skip one full-vocabulary product; long episodes' thousands stay recomputed.
KEEP_SOFTMAX_BYTES = 256 * 2**20
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


def final_states(model, **inputs) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Run the model on `inputs` and return what precedes its logits, and the head that makes them:
    the decoder's last hidden states [B, T, H] and the LM head, or, for models where that split
    would change the logits, the logits [B, T, V] and the identity."""
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder, head = causal_lm.base_model, causal_lm.get_output_embeddings()
    plain_head = decoder is not causal_lm and isinstance(head, torch.nn.Module) and not any(
        getattr(causal_lm.config, name, None) for name in LOGIT_TRANSFORMS)
    if not plain_head:
        return model(**inputs).logits, identity
    return decoder(**inputs).last_hidden_state, head


def head_logprobs(states: torch.Tensor, head: Callable[[torch.Tensor], torch.Tensor], tokens: torch.Tensor,
                  temperature: float = 1.0, with_entropy: bool = False,
                  entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log softmax(head(states) / temperature) at `tokens`, [..., H] and [...] -> [...] float32, and
    optionally the entropy of each position's distribution (detached unless `entropy_grad`)."""
    flat_states, flat_tokens = states.reshape(-1, states.shape[-1]), tokens.reshape(-1)
    recompute = torch.is_grad_enabled() and flat_states.requires_grad
    # An entropy bonus differentiates the entropy too, which only the generic path does.
    fused = type(head) is torch.nn.Linear and not entropy_grad
    weight, bias = _product_parameters(head) if fused else (None, None)
    keep_softmax = fused and recompute and flat_states.shape[0] * weight.shape[0] * 4 <= KEEP_SOFTMAX_BYTES
    logps, entropies = [], []
    for start in range(0, flat_states.shape[0], CHUNK_POSITIONS):
        chunk = (flat_states[start:start + CHUNK_POSITIONS], flat_tokens[start:start + CHUNK_POSITIONS])
        if fused:
            logp, entropy = LinearTokenLogprobs.apply(*chunk, weight, bias, temperature, with_entropy, keep_softmax)
        elif recompute:
            logp, entropy = checkpoint(_chunk_logprobs, *chunk, head, temperature, with_entropy, entropy_grad,
                                       use_reentrant=False)
        else:
            logp, entropy = _chunk_logprobs(*chunk, head, temperature, with_entropy, entropy_grad)
        logps.append(logp)
        entropies.append(entropy)
    logp = torch.cat(logps).reshape(tokens.shape)
    return logp, torch.cat(entropies).reshape(tokens.shape) if with_entropy else None


def _chunk_logprobs(states, tokens, head, temperature: float, with_entropy: bool, entropy_grad: bool):
    logits = head(states) / temperature
    logp = token_logprobs(logits, tokens)
    if not with_entropy:
        return logp, None
    if entropy_grad:
        return logp, token_entropy(logits)
    with torch.no_grad():
        return logp, token_entropy(logits.detach())


def identity(states: torch.Tensor) -> torch.Tensor:
    return states


def _product_parameters(head: torch.nn.Linear) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The head's weight and bias in the dtype its product runs in: autocast's when it is on (cast
    once per call, not once per chunk and again in the backward pass)."""
    device_type = head.weight.device.type
    if not torch.is_autocast_enabled(device_type):
        return head.weight, head.bias
    dtype = torch.get_autocast_dtype(device_type)
    return head.weight.to(dtype), None if head.bias is None else head.bias.to(dtype)


def _scaled_logits(states: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                   temperature: float) -> torch.Tensor:
    """(states W^T + b) / temperature, [N, H] -> [N, V] float32, the product in the weight's dtype."""
    logits = torch.nn.functional.linear(states.to(weight.dtype), weight, bias).float()
    return logits if temperature == 1.0 else logits.div_(temperature)


class LinearTokenLogprobs(torch.autograd.Function):
    """log softmax(z)[token] for z = (states W^T + b) / T, and optionally the (detached) entropy of
    softmax(z), for one chunk of positions. The backward pass needs softmax(z): d logp / d z =
    onehot(token) - softmax(z). With `keep_softmax` it is kept from the forward pass; otherwise only
    each position's log-sum-exp is, and z is recomputed."""

    @staticmethod
    def forward(ctx, states, tokens, weight, bias, temperature: float, with_entropy: bool, keep_softmax: bool):
        logits = _scaled_logits(states, weight, bias, temperature)
        log_normaliser = torch.logsumexp(logits, dim=-1)
        logp = logits.gather(-1, tokens[:, None]).squeeze(-1) - log_normaliser
        entropy = logits.new_empty(0)
        probs = (logits - log_normaliser[:, None]).exp_() if with_entropy or keep_softmax else None
        if with_entropy:  # H = log Z - sum_v p_v z_v
            entropy = log_normaliser - (probs * logits).sum(-1)
        ctx.save_for_backward(states, tokens, weight, bias, probs if keep_softmax else log_normaliser)
        ctx.temperature, ctx.keep_softmax = temperature, keep_softmax
        ctx.mark_non_differentiable(entropy)
        return logp, entropy

    @staticmethod
    def backward(ctx, grad_logp, _grad_entropy):
        states, tokens, weight, bias, softmax_or_log_normaliser = ctx.saved_tensors
        if ctx.keep_softmax:
            grad_logits = softmax_or_log_normaliser.mul(-grad_logp[:, None])  # -g softmax(z)
        else:
            grad_logits = _scaled_logits(states, weight, bias, ctx.temperature)
            grad_logits.sub_(softmax_or_log_normaliser[:, None]).exp_().mul_(-grad_logp[:, None])
        grad_logits.scatter_add_(-1, tokens[:, None], grad_logp[:, None])  # + g at the token
        if ctx.temperature != 1.0:
            grad_logits.div_(ctx.temperature)
        grad_logits = grad_logits.to(weight.dtype)
        grad_states = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            grad_states = (grad_logits @ weight).to(states.dtype)
        if ctx.needs_input_grad[2]:
            grad_weight = grad_logits.T @ states.to(weight.dtype)
        if bias is not None and ctx.needs_input_grad[3]:
            grad_bias = grad_logits.sum(0)
        return grad_states, None, grad_weight, grad_bias, None, None, None
