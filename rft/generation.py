"""The rollout generator: G completions per prompt, sampled by a decode loop built for rollouts.

Generation is most of a GRPO step's time, and of every evaluation. `transformers`' `generate`
grows its KV cache by concatenation at every token (a fresh allocation of the whole cache per
layer and step) and runs single-token attention through a kernel made for long queries; at 32
sequences on a CPU those two took two thirds of a decode step. This loop instead:
- runs each prompt once and copies its KV cache into a preallocated (static) cache for its G rows,
  which every decode step writes in place;
- on CPU, computes single-token attention as two small matrix products over the key/value heads
  (grouped-query attention needs no copy of the keys per query head);
- samples on tensors with transformers' own logits warpers, in generate()'s order, so the same
  seed gives the same tokens as generate() while no row has finished;
- drops finished rows from the batch once a quarter of it has finished, so long stragglers do
  not keep paying for the whole batch;
- on CPU, multiplies by weights packed once per call into oneDNN's blocked layout, with a LoRA
  adapter merged in: MKL's plain product reached 34-44 GFLOP/s on the 49k-row LM head at 32-64
  rows where the packed one reached 77-103, and the merge removes the adapter's extra products.
Models whose cache is not a plain per-layer key/value cache (sliding windows, linear attention)
fall back to generate(); `generation_path` says which path a model takes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from transformers import AttentionInterface, StaticCache
from transformers.cache_utils import DynamicLayer
from transformers.generation.logits_process import (
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from rft import prefix_cache
from rft.background import raise_if_cancelled

DECODE_ATTENTION = "rft_decode"
COMPACT_WHEN_FINISHED = 0.25  # drop finished rows once this share of the batch has finished
PACKED_WEIGHTS_MAX_BYTES = 2 * 2**30  # a packed copy of larger models' weights costs too much memory


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip padding, as generate() computes them."""
    return (attention_mask.cumsum(-1) - 1).clamp(min=0)


def pack_prompts(prompts: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists as one batch: the beginning every prompt shares, then each one's rest left-padded.

    Prompts of one task share their instructions (~330 of a Wordle prompt's ~480 tokens), so the
    generator runs that beginning once (see shared_prefix_length); the padding sits between the two
    parts, where the attention mask skips it. Returns (ids, mask), both [P, L].
    """
    shared = prefix_cache.common_prefix_length(prompts, limit=min(len(ids) for ids in prompts) - 1)
    width = max(len(ids) for ids in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        rest = len(prompt) - shared
        ids[row, :shared] = torch.tensor(prompt[:shared])
        ids[row, width - rest:] = torch.tensor(prompt[shared:])
        mask[row, :shared] = 1
        mask[row, width - rest:] = 1
    return ids, mask


def shared_prefix_length(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor) -> int:
    """How many leading columns every prompt has in common (unpadded), leaving each at least one token."""
    same = (prompt_ids == prompt_ids[:1]).all(0) & prompt_mask.bool().all(0)
    return min(int(same.long().cumprod(0).sum()), prompt_ids.shape[1] - 1)


def prefill_prompts(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor):
    """Each prompt's KV cache and its last position's logits [P, 1, V]; the beginning all prompts
    share runs once."""
    shared = shared_prefix_length(prompt_ids, prompt_mask) if prompt_ids.shape[0] > 1 else 0
    positions = positions_from_mask(prompt_mask)
    if not shared:
        return prefix_cache.prefill(model, prompt_ids, 1, attention_mask=prompt_mask, position_ids=positions)
    cache, _ = prefix_cache.prefill(model, prompt_ids[:1, :shared], prompt_ids.shape[0])
    with prefix_cache.continuing(model, cache):
        logits = model(input_ids=prompt_ids[:, shared:], attention_mask=prompt_mask, position_ids=positions[:, shared:],
                       past_key_values=cache, use_cache=True, logits_to_keep=1).logits
    return cache, logits


def decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention for one new token per row: softmax(q k^T * scale + mask) v, per key/value head.

    The query heads that share a key/value head are stacked as rows of one product, so the keys are
    read once per group instead of copied once per query head. Longer queries (a prefill) take the
    library's SDPA path. query [B, H, 1, D], key / value [B, Hkv, L, D], mask bool [B, 1, 1, L].
    """
    if query.shape[2] != 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    stacked = query.reshape(batch, kv_heads, heads // kv_heads, head_dim)
    scores = torch.matmul(stacked, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores.masked_fill(~attention_mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    output = torch.matmul(weights, value)  # [B, Hkv, H / Hkv, D]
    return output.reshape(batch, heads, 1, head_dim).transpose(1, 2), None


AttentionInterface.register(DECODE_ATTENTION, decode_attention)
AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)


PATH_DESCRIPTIONS = {
    "rollout": "the rollout decode loop (static KV cache, finished rows leave the batch)",
    "generate": "transformers' generate() (this model's cache is not a plain key/value cache)",
}


def generation_path(model) -> str:
    """'rollout' (this module's decode loop) or 'generate' (transformers' generate): PATH_DESCRIPTIONS says more."""
    return "rollout" if _has_plain_cache(model) else "generate"


def _has_plain_cache(model) -> bool:
    from transformers import DynamicCache

    config = model.config
    layer_types = getattr(config, "layer_types", None) or []
    uniform = all(kind == "full_attention" for kind in layer_types)
    cache = DynamicCache(config=config)
    return uniform and not getattr(config, "sliding_window", None) and all(type(layer) is DynamicLayer
                                                                           for layer in cache.layers)


def logits_warpers(temperature: float, top_p: float = 1.0, top_k: int = 0) -> LogitsProcessorList:
    """generate()'s sampling warpers, in its order: temperature, then top-k, then top-p."""
    warpers = LogitsProcessorList()
    if temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(temperature))
    if top_k:
        warpers.append(TopKLogitsWarper(top_k=top_k))
    if top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=top_p))
    return warpers


@torch.no_grad()
def generate(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, repeats: int, max_new_tokens: int,
             eos_ids: list[int], pad_id: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             compact: bool = True, packed_weights: bool = True) -> torch.Tensor:
    """`repeats` continuations of each left-padded prompt: token ids [P * repeats, <= max_new_tokens],
    rows of one prompt together, pad after each row's first EOS. temperature 0 decodes greedily.

    compact=False keeps finished rows in the batch (fed padding, as generate() does), and with
    packed_weights=False the products are the model's own: the two make the random numbers drawn,
    and so the tokens, the same as generate()'s for the same seed. Packed weights change the
    logits by rounding only (see tests/test_generation.py).
    """
    if not _has_plain_cache(model):
        return _generate_with_transformers(model, prompt_ids, prompt_mask, repeats, max_new_tokens, eos_ids, pad_id,
                                           temperature, top_p, top_k)
    with _decode_attention(model), _packed_linear_weights(model, enabled=packed_weights):
        prompt_cache, logits = prefill_prompts(model, prompt_ids, prompt_mask)
        prompt_cache.batch_repeat_interleave(repeats)
        return _decode(model, prompt_cache, prompt_mask.repeat_interleave(repeats, 0),
                       logits[:, -1].float().repeat_interleave(repeats, 0), max_new_tokens, eos_ids, pad_id,
                       logits_warpers(temperature, top_p, top_k) if temperature > 0 else None, compact)


def _decode(model, context_cache, context_mask: torch.Tensor, next_logits: torch.Tensor, max_new_tokens: int,
            eos_ids: list[int], pad_id: int, warpers: LogitsProcessorList | None, compact: bool = True,
            on_leave=None) -> torch.Tensor:
    """The decode loop: up to `max_new_tokens` tokens for each row of a prefilled context (its cache
    [rows, ..., Lc], mask [rows, Lc] and next-token logits [rows, V]), in a static cache. Returns the
    tokens [rows, steps], pad after each row's first EOS. `on_leave(output, output_rows, batch_rows,
    cache, attention_mask)` is called for rows about to leave the batch (compacted away, or at the
    end), while their cache is still there."""
    device = context_mask.device
    rows, context_length = context_mask.shape
    eos = torch.tensor(eos_ids, device=device)
    cache = StaticCache(config=model.config, max_cache_len=context_length + max_new_tokens)
    for index, layer in enumerate(context_cache.layers):
        cache.update(layer.keys, layer.values, index)
    del context_cache
    attention_mask = torch.zeros(rows, context_length + max_new_tokens, dtype=torch.long, device=device)
    attention_mask[:, :context_length] = context_mask
    positions = context_mask.sum(-1)

    output = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    active = torch.arange(rows, device=device)  # the output row of each batch row
    unfinished = torch.ones(rows, dtype=torch.bool, device=device)
    steps = 0
    for step in range(max_new_tokens):
        raise_if_cancelled()
        tokens = _pick(next_logits, warpers)
        tokens = torch.where(unfinished, tokens, pad_id)
        output[active, step] = tokens
        steps = step + 1
        unfinished &= ~torch.isin(tokens, eos)
        if step == max_new_tokens - 1 or not unfinished.any():
            break
        if compact and (~unfinished).sum() >= COMPACT_WHEN_FINISHED * len(active):
            keep = unfinished.nonzero().squeeze(1)
            if on_leave is not None:
                leaving = (~unfinished).nonzero().squeeze(1)
                on_leave(output, active[leaving], leaving, cache, attention_mask)
            _keep_cache_rows(cache, keep)
            active, tokens, positions = active[keep], tokens[keep], positions[keep]
            attention_mask, unfinished = attention_mask[keep], unfinished[keep]
        attention_mask[:, context_length + step] = 1
        logits = model(input_ids=tokens[:, None], attention_mask=attention_mask, position_ids=positions[:, None],
                       past_key_values=cache, use_cache=True, logits_to_keep=1).logits
        next_logits = logits[:, -1].float()
        positions = positions + 1
    if on_leave is not None:
        on_leave(output, active, torch.arange(len(active), device=device), cache, attention_mask)
    return output[:, :steps]


@dataclass
class SequenceCache:
    """What a conversation has computed so far, kept between its turns: its tokens and, for a model
    the decode loop covers, their keys and values at every layer ([Hkv, L, D] each, no padding)."""

    tokens: list[int]
    keys: list[torch.Tensor] | None = None
    values: list[torch.Tensor] | None = None


@torch.no_grad()
def continue_sequences(model, caches: list[SequenceCache | None], new_ids: list[list[int]], max_new_tokens: int,
                       eos_ids: list[int], pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
                       top_k: int = 0) -> tuple[list[list[int]], list[SequenceCache]]:
    """One continuation of each sequence (a conversation's next reply): its cache of the tokens so far
    (None to start one) and the tokens since (at least one). Returns each row's sampled tokens, up to
    and including its EOS, and its cache, which then covers everything but the last sampled token.

    Only the new tokens are prefilled, over the kept keys and values, so a conversation's earlier
    turns are never computed again; new sequences whose tokens are alike (a group's shared prompt)
    are prefilled once, their common beginning once for all. Models the decode loop does not cover
    regenerate from the whole sequence each time.
    """
    device = next(model.parameters()).device
    if not _has_plain_cache(model):
        whole = [(cache.tokens if cache else []) + ids for cache, ids in zip(caches, new_ids, strict=True)]
        prompt_ids, prompt_mask = (t.to(device) for t in pack_prompts(whole, pad_id))
        output = generate(model, prompt_ids, prompt_mask, 1, max_new_tokens, eos_ids, pad_id, temperature, top_p, top_k)
        replies = [_reply(row, eos_ids) for row in output.tolist()]
        return replies, [SequenceCache(tokens + reply[:-1]) for tokens, reply in zip(whole, replies, strict=True)]
    if any(cache is None for cache in caches) and not all(cache is None for cache in caches):
        raise ValueError("continue_sequences: start every sequence together, or continue every one")
    warpers = logits_warpers(temperature, top_p, top_k) if temperature > 0 else None
    rows = len(new_ids)
    done: list[SequenceCache | None] = [None] * rows
    context_tokens = [(cache.tokens if cache else []) + ids for cache, ids in zip(caches, new_ids, strict=True)]
    with _decode_attention(model), _packed_linear_weights(model):
        if caches[0] is None:
            context_cache, context_mask, logits = _prefill_new(model, new_ids, pad_id, device)
        else:
            context_cache, context_mask, logits = _prefill_continued(model, caches, new_ids, pad_id, device)
        context_length = context_mask.shape[1]

        def keep_caches(output, output_rows, batch_rows, cache, attention_mask):
            for output_row, batch_row in zip(output_rows.tolist(), batch_rows.tolist()):
                written = len(_reply(output[output_row].tolist(), eos_ids)) - 1  # the last token is not fed yet
                columns = torch.cat([attention_mask[batch_row, :context_length].nonzero().squeeze(1),
                                     context_length + torch.arange(written, device=device)])
                done[output_row] = SequenceCache(
                    context_tokens[output_row] + output[output_row, :written].tolist(),
                    [layer.keys[batch_row][:, columns] for layer in cache.layers],
                    [layer.values[batch_row][:, columns] for layer in cache.layers])

        output = _decode(model, context_cache, context_mask, logits, max_new_tokens, eos_ids, pad_id, warpers,
                         on_leave=keep_caches)
    return [_reply(row, eos_ids) for row in output.tolist()], done


def _prefill_new(model, new_ids: list[list[int]], pad_id: int, device):
    """The context of new sequences: alike ones prefilled once, the beginning all share once for all."""
    distinct = list(dict.fromkeys(tuple(ids) for ids in new_ids))
    index = torch.tensor([distinct.index(tuple(ids)) for ids in new_ids], device=device)
    prompt_ids, prompt_mask = (t.to(device) for t in pack_prompts([list(ids) for ids in distinct], pad_id))
    cache, logits = prefill_prompts(model, prompt_ids, prompt_mask)
    cache.batch_select_indices(index)
    return cache, prompt_mask[index], logits[index, -1].float()


def _prefill_continued(model, caches: list[SequenceCache], new_ids: list[list[int]], pad_id: int, device):
    """The context of continued sequences: each one's kept keys and values, right-aligned, then its new
    tokens, left-padded, prefilled over them (padding between the two, masked)."""
    from transformers import DynamicCache

    rows = len(caches)
    past = max(len(cache.tokens) for cache in caches)
    new = max(len(ids) for ids in new_ids)
    context_cache = DynamicCache(config=model.config)
    for layer in range(len(caches[0].keys)):
        keys = caches[0].keys[layer].new_zeros(rows, caches[0].keys[layer].shape[0], past, caches[0].keys[layer].shape[-1])
        values = caches[0].values[layer].new_zeros(rows, caches[0].values[layer].shape[0], past,
                                                   caches[0].values[layer].shape[-1])
        for row, cache in enumerate(caches):
            length = len(cache.tokens)
            keys[row, :, past - length:] = cache.keys[layer]
            values[row, :, past - length:] = cache.values[layer]
        context_cache.update(keys, values, layer)
    mask = torch.zeros(rows, past + new, dtype=torch.long, device=device)
    input_ids = torch.full((rows, new), pad_id, dtype=torch.long, device=device)
    positions = torch.zeros(rows, new, dtype=torch.long, device=device)
    for row, (cache, ids) in enumerate(zip(caches, new_ids, strict=True)):
        length, count = len(cache.tokens), len(ids)
        mask[row, past - length:past] = 1
        mask[row, past + new - count:] = 1
        input_ids[row, new - count:] = torch.tensor(ids, device=device)
        positions[row, new - count:] = length + torch.arange(count, device=device)
    with prefix_cache.continuing(model, context_cache):
        logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                       past_key_values=context_cache, use_cache=True, logits_to_keep=1).logits
    return context_cache, mask, logits[:, -1].float()


def _reply(row: list[int], eos_ids: list[int]) -> list[int]:
    """A decoded row up to and including its first EOS (all of it when it has none)."""
    ends = [position for position, token in enumerate(row) if token in eos_ids]
    return row[:ends[0] + 1] if ends else row


def _pick(logits: torch.Tensor, warpers: LogitsProcessorList | None) -> torch.Tensor:
    if warpers is None:
        return logits.argmax(-1)
    probs = torch.softmax(warpers(None, logits), dim=-1)
    return torch.multinomial(probs, num_samples=1).squeeze(1)


def _keep_cache_rows(cache: StaticCache, keep: torch.Tensor) -> None:
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[keep], layer.values[keep]
        layer.batch_size = len(keep)


@contextlib.contextmanager
def _decode_attention(model):
    """On CPU, single-token attention runs through decode_attention while the block runs."""
    config = model.config
    current = config._attn_implementation
    if next(model.parameters()).device.type != "cpu" or current not in ("sdpa", "eager"):
        yield
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation(DECODE_ATTENTION)
    try:
        yield
    finally:
        base.set_attn_implementation(current)


@contextlib.contextmanager
def _packed_linear_weights(model, enabled: bool = True):
    """On CPU, every linear layer multiplies by a packed copy of its weight while the block runs;
    a LoRA layer's copy has its active adapters merged in (W + scale * B A), so it is one product."""
    linears = _packable_linears(model) if enabled else []
    for module in linears:
        packed = torch.ops.mkldnn._reorder_linear_weight(_effective_weight(module), None)
        module.forward = _packed_forward(packed, module.get_base_layer().bias if _is_lora(module) else module.bias)
    try:
        yield
    finally:
        for module in linears:
            del module.forward


def _packable_linears(model) -> list[torch.nn.Module]:
    """The linear layers to pack (LoRA layers whole; none off CPU, without oneDNN, or for models
    whose packed copy would take too much memory)."""
    if next(model.parameters()).device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return []
    inside_lora = {id(m) for module in model.modules() if _is_lora(module) for m in module.modules() if m is not module}
    chosen = []
    for module in model.modules():
        if id(module) in inside_lora:
            continue
        if _is_lora(module) and isinstance(module.get_base_layer(), torch.nn.Linear) and not module.merged \
                and not any(module.lora_variant.get(name) for name in module.active_adapters):
            chosen.append(module)
        elif type(module) is torch.nn.Linear:
            chosen.append(module)
    weights = [m.get_base_layer().weight if _is_lora(m) else m.weight for m in chosen]
    if any(w.dtype != torch.float32 for w in weights) or sum(w.numel() * 4 for w in weights) > PACKED_WEIGHTS_MAX_BYTES:
        return []
    return chosen


def _is_lora(module) -> bool:
    return hasattr(module, "lora_A") and hasattr(module, "get_base_layer")


def _effective_weight(module) -> torch.Tensor:
    if not _is_lora(module):
        return module.weight.detach()
    weight = module.get_base_layer().weight.detach()
    if module.disable_adapters:
        return weight
    for name in module.active_adapters:
        if name in module.lora_A:
            weight = weight + module.get_delta_weight(name).detach()
    return weight


def _packed_forward(packed: torch.Tensor, bias: torch.Tensor | None):
    def forward(x, *args, **kwargs):
        rows = x.reshape(-1, x.shape[-1])
        return torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "").reshape(*x.shape[:-1], -1)

    return forward


def _generate_with_transformers(model, prompt_ids, prompt_mask, repeats, max_new_tokens, eos_ids, pad_id,
                                temperature, top_p, top_k) -> torch.Tensor:
    """generate() over the shared-prompt cache: for models whose cache the decode loop does not cover."""
    # The cache covers all but the last prompt token: generate() feeds that token itself.
    cache, _ = prefix_cache.prefill(model, prompt_ids[:, :-1], repeats, attention_mask=prompt_mask[:, :-1],
                                    position_ids=positions_from_mask(prompt_mask[:, :-1]))
    sampling = {"do_sample": True, "temperature": temperature, "top_p": top_p, "top_k": top_k or None} \
        if temperature > 0 else {"do_sample": False}
    output = model.generate(input_ids=prompt_ids.repeat_interleave(repeats, 0),
                            attention_mask=prompt_mask.repeat_interleave(repeats, 0), past_key_values=cache,
                            max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad_id, **sampling)
    return output[:, prompt_ids.shape[1]:]
