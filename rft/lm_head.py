"""Token log-probabilities for training without the whole batch's full-vocabulary logits in memory.

A causal LM's last step is a linear head from the hidden state (576 numbers a token for the
bundled model) to the vocabulary (49,152 logits a token). For training, autograd keeps those
logits for the backward pass: a Wordle episode batch of 12 conversations of ~1,300 tokens holds
3 GB of them per copy. Here the decoder returns its hidden states, and the head runs on chunks of
positions, each chunk checkpointed: its logits live only while its log-probabilities are computed,
and again in the backward pass, where they are recomputed (the head is a small part of the
model's arithmetic).

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
    logps, entropies = [], []
    for start in range(0, flat_states.shape[0], CHUNK_POSITIONS):
        chunk = (flat_states[start:start + CHUNK_POSITIONS], flat_tokens[start:start + CHUNK_POSITIONS])
        if recompute:
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
