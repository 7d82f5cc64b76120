"""Rollouts: sample a group of completions per prompt, and score tokens under a policy.

Generation is the bottleneck of every GRPO trainer, so the whole batch (P prompts x G
completions) is sampled at once by the rollout generator (rft.generation).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from rft import generation, lm_head, prefix_cache
from rft.config import SamplingConfig
from rft.generation import positions_from_mask


@dataclass
class Rollout:
    """One batch of sampled completions, grouped: rows [p*G, (p+1)*G) answer prompt p."""

    prompt_ids: torch.Tensor  # [P, Lp], packed (generation.pack_prompts): each prompt once, shared by its group
    prompt_mask: torch.Tensor  # [P, Lp]
    group_size: int  # G
    completion_ids: torch.Tensor  # [B, Lc], padded after the first EOS
    completion_mask: torch.Tensor  # [B, Lc] float: 1 on tokens the model wrote, up to and including EOS
    completions: list[str]  # an episode's: its last reply
    truncated: torch.Tensor  # [B] bool: hit the length limit without EOS (an episode: cut by a limit)
    generate_seconds: float
    # Episodes (rft.environments): their environment messages sit between the model's replies, as
    # context the model attends to (context_mask 1) but does not learn from (completion_mask 0).
    context_mask: torch.Tensor | None = None  # [B, Lc] float: 1 on every token of the episode
    episodes: list | None = None  # rft.environments.episodes.Episode, one per row

    @property
    def completion_lengths(self) -> torch.Tensor:
        """Tokens the model wrote, per row."""
        return self.completion_mask.sum(-1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """[B, Lc] float: the tokens after the prompt that are there (not padding)."""
        return self.completion_mask if self.context_mask is None else self.context_mask

    @property
    def sequence_lengths(self) -> torch.Tensor:
        """Tokens after the prompt per row: the model's and, in an episode, the environment's."""
        return self.attention_mask.sum(-1)

    def select_groups(self, groups: list[int]) -> Rollout:
        """The rollout of these prompt groups only, in this order."""
        rows = torch.tensor([g * self.group_size + i for g in groups for i in range(self.group_size)], dtype=torch.long)
        index = torch.tensor(groups, dtype=torch.long)
        return Rollout(self.prompt_ids[index], self.prompt_mask[index], self.group_size, self.completion_ids[rows],
                       self.completion_mask[rows], [self.completions[r] for r in rows.tolist()], self.truncated[rows],
                       self.generate_seconds, None if self.context_mask is None else self.context_mask[rows],
                       None if self.episodes is None else [self.episodes[r] for r in rows.tolist()])

    @staticmethod
    def concatenate(rollouts: list[Rollout], pad_id: int) -> Rollout:
        """Several rollouts as one: prompts padded on the left to the widest, completions on the right
        to the longest (the masks skip the padding; positions come from the masks)."""
        prompt_width = max(r.prompt_ids.shape[1] for r in rollouts)
        completion_width = max(r.completion_ids.shape[1] for r in rollouts)

        def left(t, value):
            return torch.nn.functional.pad(t, (prompt_width - t.shape[1], 0), value=value)

        def right(t, value):
            return torch.nn.functional.pad(t, (0, completion_width - t.shape[1]), value=value)

        return Rollout(
            torch.cat([left(r.prompt_ids, pad_id) for r in rollouts]),
            torch.cat([left(r.prompt_mask, 0) for r in rollouts]),
            rollouts[0].group_size,
            torch.cat([right(r.completion_ids, pad_id) for r in rollouts]),
            torch.cat([right(r.completion_mask, 0.0) for r in rollouts]),
            [c for r in rollouts for c in r.completions],
            torch.cat([r.truncated for r in rollouts]),
            sum(r.generate_seconds for r in rollouts),
            None if rollouts[0].context_mask is None else torch.cat([right(r.context_mask, 0.0) for r in rollouts]),
            None if rollouts[0].episodes is None else [e for r in rollouts for e in r.episodes],
        )


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


def prefill_shared_prompts(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """Run each prompt once; its KV cache then serves each of its G completions (prefix_cache.rows_of).

    The prompt is usually longer than the completions (the Wordle system prompt is ~300
    tokens), so computing it once per group instead of G times removes most of the work of
    prefill, and of the training forward and backward passes. Gradients flow through the
    selected rows back to the single prompt computation. Returns (cache, logits at the last
    prompt position [P, 1, V]).
    """
    return prefix_cache.prefill(model, prompt_ids, 1, attention_mask=prompt_mask,
                                position_ids=positions_from_mask(prompt_mask))


@torch.no_grad()
def sample_group(model, tokenizer, prompt_texts: list[str], sampling: SamplingConfig,
                 bf16: bool | None = None) -> Rollout:
    """G completions for each prompt, sampled in one batch over a shared prompt prefill (bf16 as in
    rft.generation.generate)."""
    group = sampling.num_generations
    device = next(model.parameters()).device
    encoded = [tokenizer(text, add_special_tokens=False).input_ids for text in prompt_texts]
    prompt_ids, prompt_mask = (t.to(device) for t in generation.pack_prompts(encoded, tokenizer.pad_token_id))
    eos_ids = eos_token_ids(model, tokenizer)
    started = time.perf_counter()
    completion_ids = generation.generate(model, prompt_ids, prompt_mask, group, sampling.max_completion_length, eos_ids,
                                         tokenizer.pad_token_id, sampling.temperature, sampling.top_p, sampling.top_k,
                                         bf16=bf16)
    if device.type == "cuda":
        torch.cuda.synchronize()
    generate_seconds = time.perf_counter() - started
    completion_mask, truncated = completion_mask_from_ids(completion_ids, eos_ids)
    completion_ids = torch.where(completion_mask.bool(), completion_ids, torch.full_like(completion_ids, tokenizer.pad_token_id))
    completions = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, group, completion_ids, completion_mask, completions, truncated, generate_seconds)


def rollout_from_episodes(tokenizer, batch, group_size: int, device: torch.device) -> Rollout:
    """The rollout of played episodes (rft.environments.episodes.EpisodeBatch): each episode's tokens
    after its prompt as one completion, the environment's tokens masked out of the loss."""
    encoded = [tokenizer(text, add_special_tokens=False).input_ids for text in batch.prompt_texts]
    prompt_ids, prompt_mask = generation.pack_prompts(encoded, tokenizer.pad_token_id)
    width = max(1, max(len(episode.token_ids) for episode in batch.episodes))
    rows = len(batch.episodes)
    completion_ids = torch.full((rows, width), tokenizer.pad_token_id, dtype=torch.long)
    completion_mask, context_mask = torch.zeros(rows, width), torch.zeros(rows, width)
    for row, episode in enumerate(batch.episodes):
        length = len(episode.token_ids)
        completion_ids[row, :length] = torch.tensor(episode.token_ids, dtype=torch.long)
        completion_mask[row, :length] = torch.tensor(episode.model_mask, dtype=torch.float32)
        context_mask[row, :length] = 1.0
    truncated = torch.tensor([episode.truncated for episode in batch.episodes])
    last_replies = [episode.replies[-1] if episode.replies else "" for episode in batch.episodes]
    return Rollout(prompt_ids.to(device), prompt_mask.to(device), group_size, completion_ids.to(device),
                   completion_mask.to(device), last_replies, truncated.to(device), batch.generate_seconds,
                   context_mask.to(device), batch.episodes)


ROWS_PER_PASS = 32  # completions that run through the decoder together, padded to the longest of them


def completion_logprobs(
    model, rollout: Rollout, temperature: float, with_entropy: bool = False, entropy_grad: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log pi(token) at every completion position ([B, Lc]), and optionally the token entropy:
    detached, unless `entropy_grad` (an entropy bonus in the loss), which keeps each position's
    full-vocabulary softmax for the backward pass. Positions after a row's end get 0.

    The prompt runs once per group (prefill_shared_prompts). The completions then run on its cache,
    longest first, ROWS_PER_PASS at a time, each pass padded only to its own longest: padded to the
    batch's longest, arithmetic completions of 25 to 60 tokens spent a third of the decoder's work
    on padding. Only the positions that are there reach the LM head, a chunk at a time (rft.lm_head).
    Logits are divided by the sampling temperature so the ratio compares the distribution that was
    sampled from.
    """
    cache, first_logits = prefill_shared_prompts(model, rollout.prompt_ids, rollout.prompt_mask)
    logp, entropy = lm_head.head_logprobs(first_logits.repeat_interleave(rollout.group_size, dim=0), lm_head.identity,
                                          rollout.completion_ids[:, :1], temperature, with_entropy, entropy_grad)
    lengths = rollout.sequence_lengths.long()
    if int(lengths.max()) < 2:  # no completion has a position after its first
        padding = logp.new_zeros(len(lengths), rollout.completion_ids.shape[1] - 1)
        return torch.cat([logp, padding], dim=1), torch.cat([entropy, padding], dim=1) if with_entropy else None
    order = lengths.argsort(descending=True, stable=True)
    prompt_of_row = torch.arange(len(lengths), device=lengths.device) // rollout.group_size
    states, head = [], None
    for rows in order.split(ROWS_PER_PASS):
        width = int(lengths[rows[0]])  # the pass's longest, and so its input width + 1
        if width < 2:
            break  # this pass and the ones after it have no position after the first
        prompts = prompt_of_row[rows]
        prompt_mask = rollout.prompt_mask[prompts]
        attention_mask = torch.cat([prompt_mask, rollout.attention_mask[rows, :width - 1].long()], dim=1)
        first_position = prompt_mask.sum(-1, keepdim=True)
        steps = torch.arange(width - 1, device=prompt_mask.device)[None, :]
        pass_cache = prefix_cache.rows_of(cache, prompts)
        with prefix_cache.continuing(model, pass_cache):
            pass_states, head = lm_head.final_states(
                model,
                input_ids=rollout.completion_ids[rows, :width - 1],
                attention_mask=attention_mask,
                position_ids=first_position + steps,
                past_key_values=pass_cache,
                use_cache=True,
            )
        states.append(pass_states[rollout.attention_mask[rows, 1:width].bool()])
    # Row by row in `order`, the positions after the first that are there (not padding).
    present = rollout.attention_mask[order, 1:].bool()
    rest_logp, rest_entropy = lm_head.head_logprobs(torch.cat(states), head, rollout.completion_ids[order, 1:][present],
                                                    temperature, with_entropy, entropy_grad)
    back = order.argsort()
    logp = torch.cat([logp, _at_positions(rest_logp, present)[back]], dim=1)
    entropy = torch.cat([entropy, _at_positions(rest_entropy, present)[back]], dim=1) if with_entropy else None
    return logp, entropy


def _at_positions(values: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """[N] values of the N present positions of a [B, T] mask, as [B, T] with 0 elsewhere."""
    return values.new_zeros(present.shape).masked_scatter(present, values)
