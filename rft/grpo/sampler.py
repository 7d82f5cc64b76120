"""Rollouts: sample a group of completions per prompt, and score tokens under a policy.

Generation is the bottleneck of every GRPO trainer, so the whole batch (P prompts x G
completions) is sampled in one `generate` call that stops as soon as every sequence has ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from rft.config import SamplingConfig
from rft.grpo.loss import token_entropy, token_logprobs


@dataclass
class Rollout:
    """One batch of sampled completions, grouped: rows [g*G, (g+1)*G) share prompt g."""

    prompt_ids: torch.Tensor  # [B, Lp], left-padded
    prompt_mask: torch.Tensor  # [B, Lp]
    completion_ids: torch.Tensor  # [B, Lc], right-padded after the first EOS
    completion_mask: torch.Tensor  # [B, Lc] float: 1 on tokens up to and including EOS
    completions: list[str]
    truncated: torch.Tensor  # [B] bool: hit the length limit without EOS
    generate_seconds: float

    @property
    def completion_lengths(self) -> torch.Tensor:
        return self.completion_mask.sum(-1)


def completion_mask_from_ids(completion_ids: torch.Tensor, eos_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """1 up to and including the first EOS, 0 after it; and which rows never produced an EOS."""
    is_eos = torch.isin(completion_ids, torch.tensor(eos_ids, device=completion_ids.device))
    length = completion_ids.shape[1]
    first_eos = torch.where(is_eos.any(-1), is_eos.int().argmax(-1), torch.full_like(is_eos[:, 0], length, dtype=torch.long))
    positions = torch.arange(length, device=completion_ids.device)[None, :]
    mask = (positions <= first_eos[:, None]).float()
    return mask, ~is_eos.any(-1)


def eos_token_ids(model, tokenizer) -> list[int]:
    ids = model.generation_config.eos_token_id
    ids = ids if isinstance(ids, list) else [ids] if ids is not None else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@torch.no_grad()
def sample_group(model, tokenizer, prompt_texts: list[str], sampling: SamplingConfig, max_prompt_length: int) -> Rollout:
    """G completions for each prompt, sampled in one batch."""
    group = sampling.num_generations
    encoded = tokenizer(prompt_texts, return_tensors="pt", padding=True, add_special_tokens=False)
    if encoded.input_ids.shape[1] > max_prompt_length:
        raise ValueError(f"a prompt is {encoded.input_ids.shape[1]} tokens, over the {max_prompt_length}-token limit")
    device = next(model.parameters()).device
    prompt_ids = encoded.input_ids.repeat_interleave(group, dim=0).to(device)
    prompt_mask = encoded.attention_mask.repeat_interleave(group, dim=0).to(device)
    eos_ids = eos_token_ids(model, tokenizer)
    started = time.perf_counter()
    output = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        do_sample=True,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k or None,
        max_new_tokens=sampling.max_completion_length,
        eos_token_id=eos_ids,
        pad_token_id=tokenizer.pad_token_id,
    )
    if device.type == "cuda":
        torch.cuda.synchronize()
    generate_seconds = time.perf_counter() - started
    completion_ids = output[:, prompt_ids.shape[1] :]
    completion_mask, truncated = completion_mask_from_ids(completion_ids, eos_ids)
    completion_ids = torch.where(completion_mask.bool(), completion_ids, torch.full_like(completion_ids, tokenizer.pad_token_id))
    completions = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, completions, truncated, generate_seconds)


def completion_logprobs(
    model, rollout: Rollout, temperature: float, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(token) at every completion position ([B, Lc]), and optionally the token entropy.

    Only the completion positions reach the LM head (`logits_to_keep`), and logits are divided
    by the sampling temperature so the ratio compares the distribution that was sampled from.
    """
    input_ids = torch.cat([rollout.prompt_ids, rollout.completion_ids], dim=1)
    attention_mask = torch.cat([rollout.prompt_mask, rollout.completion_mask.long()], dim=1)
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    completion_length = rollout.completion_ids.shape[1]
    logits = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids,
        logits_to_keep=completion_length + 1,
        use_cache=False,
    ).logits[:, :-1]
    logits = logits / temperature
    logp = token_logprobs(logits, rollout.completion_ids)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = token_entropy(logits.detach())
    return logp, entropy
