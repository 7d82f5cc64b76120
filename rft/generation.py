"""The rollout generator: G completions per prompt, sampled by a decode loop built for rollouts.

Generation is most of a GRPO step's time, and of every evaluation. `transformers`' `generate`
grows its KV cache by concatenation at every token (a fresh allocation of the whole cache per
layer and step) and runs single-token attention through a kernel made for long queries; at 32
sequences on a CPU those two took two thirds of a decode step. This loop instead:
- runs each prompt once and keeps its KV cache once, shared by its G rows (never copied per row);
  the tokens the rows write go to a preallocated (static) cache that every decode step fills in
  place;
- computes single-token attention as matrix products over the key/value heads (grouped-query
  attention needs no copy of the keys per query head), and over the shared prompt as one product
  per prompt for all its rows' queries (cascade attention): the prompt's keys are read once per
  group instead of once per row, which at 64 rows was a fifth of a decode step;
- samples on tensors with transformers' own logits warpers, in generate()'s order, then one
  uniform number per row against the cumulative distribution (`_pick`; with multinomial=True,
  generate()'s own draws, so the same seed gives its tokens while no row has finished);
- drops finished rows from the batch once a quarter of it has finished, so long stragglers do
  not keep paying for the whole batch;
- runs in inference mode (`_in_inference_mode`): no tensor keeps autograd's records, which a step
  of a few rows, a few thousand small operations, feels;
- on CPU, multiplies by weights packed once per call into oneDNN's blocked layout, with a LoRA
  adapter merged in: MKL's plain product reached 34-44 GFLOP/s on the 49k-row LM head at 32-64
  rows where the packed one reached 77-103, and the merge removes the adapter's extra products;
- for Llama-family models, computes each decode step with `LlamaDecodeStep`: the same function as
  the model's forward in far fewer operations, which is what a step of a few rows costs;
- on a CPU with native bf16 matmuls (AVX512-BF16, AMX), packs the weights in bf16 and runs the
  linear layers' products in bf16, which halves the bytes every step reads and doubles their
  arithmetic rate. Prompt caches larger than the weights are kept in bf16 too: when every row has a
  long prompt of its own (an evaluation's games, an environment's episodes), reading them can be most of
  a step. The residual stream, the rows' own tokens' cache and the softmax stay fp32; the logits are
  rounded to bf16 as a bf16 model's are in any GPU sampler, and as the training pass's bf16 autocast
  rounds them. The loss never uses the sampler's probabilities: the training pass computes its own.
Models whose cache is not a plain per-layer key/value cache (sliding windows, linear attention)
fall back to generate(); `generation_path` says which path a model takes.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
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

from rft import models, prefix_cache
from rft.background import raise_if_cancelled

DECODE_ATTENTION = "rft_decode"
COMPACT_WHEN_FINISHED = 0.25  # drop finished rows once this share of the batch has finished
PACKED_WEIGHTS_MAX_BYTES = 2 * 2**30  # a packed copy of larger models' weights costs too much memory
SAMPLER_BLOCK = 256  # vocabulary entries per block of the sampler's two-level cumulative sum


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


def decode_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, shared_context=None,
                     **kwargs):
    """The attention interface's function while the decode loop runs: `attend_one_token` for one new
    token per row, the library's SDPA for longer queries (a prefill). query [B, H, 1, D], key / value
    [B, Hkv, L, D] (the rows' own tokens), mask bool [B, 1, 1, L]."""
    if query.shape[2] != 1 or dropout:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    batch, heads, _, head_dim = query.shape
    kv_heads = key.shape[1]
    queries = (query * scaling).reshape(batch, kv_heads, heads // kv_heads, head_dim)
    output = attend_one_token(queries, key, value, attention_mask, shared_context, module.layer_idx)
    return output.reshape(batch, heads, 1, head_dim).transpose(1, 2), None


def attend_one_token(queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
                     context: SharedContext | None, layer: int) -> torch.Tensor:
    """Attention for one new token per row: softmax(q k^T + mask) v, per key/value head, over the row's
    shared context (its prompt's keys, `SharedContext`) and then its own tokens.

    The query heads that share a key/value head are stacked as rows of one product, so the keys are
    read once per group instead of copied once per query head. The scores over the context come out
    head-major ([Hkv, B, g, Lc], see SharedContext), and the rows' own ones join them there: the
    softmax and the context's products then read and write the long context-sized tensors in place,
    and only the short own-token ones are transposed. queries [B, Hkv, g, D], already scaled; keys /
    values [B, Hkv, L, D]; mask None or bool [B, 1, 1, L]. Returns [B, Hkv, g, D].
    """
    scores = torch.matmul(queries, keys.transpose(-1, -2))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    if context is None:
        return torch.matmul(torch.softmax(scores, dim=-1, dtype=torch.float32).to(values.dtype), values)
    context_scores = context.scores(queries.transpose(0, 1), layer)
    weights = torch.softmax(torch.cat([context_scores, scores.transpose(0, 1)], -1), dim=-1,
                            dtype=torch.float32).to(values.dtype)
    context_length = context_scores.shape[-1]
    own = torch.matmul(weights[..., context_length:].transpose(0, 1), values)
    return own + context.weighted_values(weights[..., :context_length], layer).transpose(0, 1)


class SharedContext:
    """The keys and values the rows of a decode batch attend to before their own tokens, kept once
    per distinct context (a prompt and its G rows share one) rather than copied into every row.

    Attention over it gathers each context's rows' queries into one product with its keys. The
    rows of a context need not be adjacent; `keep_rows` follows the batch when finished rows leave.
    keys / values: per layer [C, Hkv, Lc, D], as a cache holds them; mask [C, Lc] (1 where a token
    is); row_context [B].

    They are kept head-major, [Hkv, C, Lc, D], and so are the queries and the scores of their
    products ([Hkv, B, g, ...]): a batch's rows in generate()'s order (each context's rows together)
    are then each context's block of rows as they are, with no copy into a per-context layout and back.

    `dtype` keeps the keys and values, and runs their products, in another precision (bf16 when the
    decode loop's products are bf16): when the rows have contexts of their own (an evaluation's games,
    an environment's episodes), reading them can be most of a decode step, and bf16 halves the bytes.
    """

    def __init__(self, keys: list[torch.Tensor], values: list[torch.Tensor], mask: torch.Tensor,
                 row_context: torch.Tensor, dtype: torch.dtype | None = None):
        self.given_dtype = keys[0].dtype
        self.keys = [_head_major(k, dtype or self.given_dtype) for k in keys]
        self.values = [_head_major(v, dtype or self.given_dtype) for v in values]
        self.mask = mask.bool()
        self._place_rows(row_context)

    def keep_rows(self, keep: torch.Tensor) -> None:
        self._place_rows(self.row_context[keep])

    def _place_rows(self, row_context: torch.Tensor) -> None:
        """Each row's slot among its context's rows, and where that puts it in [C * width]."""
        self.row_context = row_context
        contexts = len(self.mask)
        earlier_of_same = torch.nn.functional.one_hot(self.row_context, contexts).cumsum(0)
        slot = earlier_of_same.gather(1, self.row_context[:, None]).squeeze(1) - 1
        self.width = int(slot.max()) + 1 if len(slot) else 1
        self.flat_index = self.row_context * self.width + slot
        # A batch as generate() starts it (each context's rows together, as many for each) needs no
        # scatter into the per-context layout, and unpadded contexts no mask.
        self.in_order = len(slot) == contexts * self.width and torch.equal(
            self.flat_index, torch.arange(len(slot), device=slot.device))
        self.row_mask = None if self.mask.all() else self.mask[self.row_context][None, :, None, :]  # [1, B, 1, Lc]

    def scores(self, queries: torch.Tensor, layer: int) -> torch.Tensor:
        """q k^T over the context, masked: head-major queries [Hkv, B, g, D] -> [Hkv, B, g, Lc]."""
        keys = self.keys[layer]
        scores = torch.matmul(self._by_context(queries).to(keys.dtype), keys.transpose(-1, -2))
        scores = self._by_row(scores.to(queries.dtype))
        return scores if self.row_mask is None else scores.masked_fill(~self.row_mask, float("-inf"))

    def weighted_values(self, weights: torch.Tensor, layer: int) -> torch.Tensor:
        """weights v over the context: head-major [Hkv, B, g, Lc] -> [Hkv, B, g, D]."""
        values = self.values[layer]
        return self._by_row(torch.matmul(self._by_context(weights).to(values.dtype), values).to(weights.dtype))

    def row_keys_values(self, row: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """A row's context, unpadded, in the dtype it was given in: per layer [Hkv, tokens, D]."""
        context = int(self.row_context[row])
        columns = self.mask[context].nonzero().squeeze(1)
        return ([k[:, context][:, columns].to(self.given_dtype) for k in self.keys],
                [v[:, context][:, columns].to(self.given_dtype) for v in self.values])

    def _by_context(self, per_row: torch.Tensor) -> torch.Tensor:
        """[Hkv, B, g, X] -> [Hkv, C, width * g, X], each context's rows side by side (zeros where it has fewer)."""
        kv_heads, _, groups, last = per_row.shape
        if not self.in_order:
            padded = per_row.new_zeros(kv_heads, len(self.mask) * self.width, groups, last)
            padded[:, self.flat_index] = per_row
            per_row = padded
        return per_row.reshape(kv_heads, len(self.mask), self.width * groups, last)

    def _by_row(self, per_context: torch.Tensor) -> torch.Tensor:
        kv_heads, contexts, _, last = per_context.shape
        by_row = per_context.view(kv_heads, contexts * self.width, -1, last)
        return by_row if self.in_order else by_row[:, self.flat_index]


def _head_major(per_context: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[C, Hkv, L, D] -> [Hkv, C, L, D], contiguous, in `dtype` (one copy)."""
    contexts, kv_heads, length, head_dim = per_context.shape
    return per_context.new_empty((kv_heads, contexts, length, head_dim), dtype=dtype).copy_(per_context.transpose(0, 1))


AttentionInterface.register(DECODE_ATTENTION, decode_attention)
AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)


@dataclass
class FusedLayer:
    """A decoder layer as LlamaDecodeStep computes it: its products (packed, q/k/v and gate/up fused)
    and its norms' (weight, epsilon)."""

    input_norm: tuple[torch.Tensor, float]
    qkv: Callable[[torch.Tensor], torch.Tensor]
    o: Callable[[torch.Tensor], torch.Tensor]
    post_norm: tuple[torch.Tensor, float]
    gate_up: Callable[[torch.Tensor], torch.Tensor]
    down: Callable[[torch.Tensor], torch.Tensor]


class LlamaDecodeStep:
    """One decode step of a Llama-family model (Llama, SmolLM, Mistral, Qwen2), written as the few
    operations its equations need, for use with packed weights.

    At a handful of rows a decode step is bound by per-operation overhead, not arithmetic: the
    model's own forward spends ~75 tensor operations and a dozen module calls a layer (casts, views,
    masks rebuilt each step, three query/key/value products, two MLP input products). This step
    computes the same function with one product for q, k and v and one for the MLP's gate and up
    (`FusedProduct`s, which the prefill's forward shares), each RMS norm as one call, and rotary
    embedding as one roll (rotate_half(x) is roll(x, D/2) with the first half negated) whose factors
    for q carry the attention's scale (rotary embedding is linear, so scaling them scales the scores:
    one multiply a step instead of one a layer). It keeps the rows' own keys and values in tensors of
    its own, written in place, and attends over the columns written so far (every row has written
    the same ones, so no mask). The products are the packed copies `_packed_linear_weights` uses, so
    its numerics are the model's own up to the order of float additions (tests/test_generation.py
    compares the two).
    """

    MODEL_TYPES = ("llama", "mistral", "qwen2")

    @classmethod
    def covers(cls, model, packed: PackedWeights) -> bool:
        """Whether `model` is of a Llama-family architecture this step computes exactly, with every
        linear layer it uses among the `packed` ones (an adapter kind that cannot be merged, such as
        DoRA, keeps its own forward)."""
        config = model.config
        if config.model_type not in cls.MODEL_TYPES or config.hidden_act != "silu" \
                or getattr(config, "mlp_bias", False) or getattr(config, "pretraining_tp", 1) > 1:
            return False
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        packed_ids = {id(module) for module in packed.layers}
        layers = base.model.layers
        used = [base.lm_head] + [module for layer in layers for module in (layer.self_attn.o_proj, layer.mlp.down_proj)]
        return all(id(module) in packed_ids for module in used) and all(
            id(layer.self_attn) in packed.fused and id(layer.mlp) in packed.fused for layer in layers)

    def __init__(self, model, packed: PackedWeights, context: SharedContext, rows: int, max_new_tokens: int):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = base.config
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.heads
        self.embed_tokens, self.rotary_emb = base.model.embed_tokens, base.model.rotary_emb
        self.final_norm = (base.model.norm.weight, base.model.norm.variance_epsilon)
        self.lm_head = base.lm_head.forward  # the packed product `_packed_linear_weights` installed
        device = next(model.parameters()).device
        half = self.head_dim // 2
        self.rotate_sign = torch.cat([-torch.ones(half), torch.ones(half)]).to(device)
        scaling = base.model.layers[0].self_attn.scaling
        self.head_scales = torch.cat([torch.full((self.heads, 1), scaling), torch.ones(self.kv_heads, 1)]).to(device)
        self.layers = [self._layer(layer, packed) for layer in base.model.layers]
        self.context = context
        # Columns are written one step at a time and only those written are read: no need to clear.
        shape = (rows, self.kv_heads, max_new_tokens, self.head_dim)
        self.keys = [torch.empty(shape, device=device) for _ in self.layers]
        self.values = [torch.empty(shape, device=device) for _ in self.layers]

    @staticmethod
    def _layer(layer, packed: PackedWeights) -> FusedLayer:
        attention, mlp = layer.self_attn, layer.mlp
        return FusedLayer(
            input_norm=(layer.input_layernorm.weight, layer.input_layernorm.variance_epsilon),
            qkv=packed.fused[id(attention)].product,
            o=attention.o_proj.forward,
            post_norm=(layer.post_attention_layernorm.weight, layer.post_attention_layernorm.variance_epsilon),
            gate_up=packed.fused[id(mlp)].product,
            down=mlp.down_proj.forward,
        )

    def keep_rows(self, keep: torch.Tensor) -> None:
        self.keys = [keys[keep] for keys in self.keys]
        self.values = [values[keep] for values in self.values]

    def own_keys_values(self, row: int, written: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The keys and values of a row's first `written` tokens: per layer [Hkv, written, D]."""
        return [keys[row, :, :written] for keys in self.keys], [values[row, :, :written] for values in self.values]

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, step: int) -> torch.Tensor:
        """The next-token logits [B, V] (fp32) after feeding `tokens` [B] at `positions` [B], the rows'
        token number `step`."""
        rows, heads, kv_heads, head_dim = len(tokens), self.heads, self.kv_heads, self.head_dim
        x = self.embed_tokens(tokens)
        cos, sin = self.rotary_emb(x, positions[:, None])  # [B, 1, D]
        cos, signed_sin = cos * self.head_scales, sin * self.rotate_sign * self.head_scales  # [B, H + Hkv, D]
        hidden = (x.shape[-1],)
        for index, layer in enumerate(self.layers):
            qkv = layer.qkv(torch.nn.functional.rms_norm(x, hidden, *layer.input_norm))
            query_key = qkv[:, :(heads + kv_heads) * head_dim].view(rows, heads + kv_heads, head_dim)
            query_key = query_key * cos + query_key.roll(head_dim // 2, -1) * signed_sin
            keys, values = self.keys[index], self.values[index]
            keys[:, :, step] = query_key[:, heads:]
            values[:, :, step] = qkv[:, (heads + kv_heads) * head_dim:].view(rows, kv_heads, head_dim)
            queries = query_key[:, :heads].view(rows, kv_heads, heads // kv_heads, head_dim)
            attention = attend_one_token(queries, keys[:, :, :step + 1], values[:, :, :step + 1], None, self.context,
                                         index)
            x = x + layer.o(attention.reshape(rows, heads * head_dim))
            gate_up = layer.gate_up(torch.nn.functional.rms_norm(x, hidden, *layer.post_norm))
            gate, up = gate_up.chunk(2, -1)
            x = x + layer.down(torch.nn.functional.silu(gate) * up)
        return self.lm_head(torch.nn.functional.rms_norm(x, hidden, *self.final_norm)).float()


class ModelDecodeStep:
    """The model's own forward as a decode step (any model the decode loop covers), with
    LlamaDecodeStep's interface: the rows' own tokens go to a StaticCache, under an attention mask
    of the columns written so far."""

    def __init__(self, model, context: SharedContext, rows: int, max_new_tokens: int):
        self.model, self.context = model, context
        self.cache = StaticCache(config=model.config, max_cache_len=max_new_tokens)
        self.attention_mask = torch.zeros(rows, max_new_tokens, dtype=torch.long, device=context.mask.device)

    def keep_rows(self, keep: torch.Tensor) -> None:
        self.attention_mask = self.attention_mask[keep]
        if self.cache.is_initialized:
            for layer in self.cache.layers:
                layer.keys, layer.values = layer.keys[keep], layer.values[keep]
                layer.batch_size = len(keep)

    def own_keys_values(self, row: int, written: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return ([layer.keys[row, :, :written] for layer in self.cache.layers],
                [layer.values[row, :, :written] for layer in self.cache.layers])

    def __call__(self, tokens: torch.Tensor, positions: torch.Tensor, step: int) -> torch.Tensor:
        self.attention_mask[:, step] = 1
        logits = self.model(input_ids=tokens[:, None], attention_mask=self.attention_mask,
                            position_ids=positions[:, None], past_key_values=self.cache, use_cache=True,
                            logits_to_keep=1, shared_context=self.context).logits
        return logits[:, -1].float()


PATH_DESCRIPTIONS = {
    "rollout": "the rollout decode loop (prompt KV cache shared by its rows, finished rows leave the batch)",
    "generate": "transformers' generate() (this model's cache is not a plain key/value cache, or its attention "
                "implementation is not sdpa / eager)",
}


def generation_path(model) -> str:
    """'rollout' (this module's decode loop) or 'generate' (transformers' generate): PATH_DESCRIPTIONS says more."""
    return "rollout" if _has_plain_cache(model) else "generate"


def _has_plain_cache(model) -> bool:
    from transformers import DynamicCache

    config = model.config
    if config._attn_implementation not in ("sdpa", "eager", DECODE_ATTENTION):
        return False
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


def _in_inference_mode(function):
    """Runs the generator in inference mode, where tensors keep no version counters or view records
    for autograd (measured: 1.10x no_grad's tokens/s at 8 rows, 1.03x at 64: a step is a few
    thousand small operations), and gives a tensor result back as an ordinary tensor, which the
    training pass may use (an inference tensor cannot be saved for backward)."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        with torch.inference_mode():
            result = function(*args, **kwargs)
        return result.clone() if isinstance(result, torch.Tensor) else result

    return run


@_in_inference_mode
def generate(model, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, repeats: int, max_new_tokens: int,
             eos_ids: list[int], pad_id: int, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
             compact: bool = True, packed_weights: bool = True, multinomial: bool = False,
             bf16: bool | None = None) -> torch.Tensor:
    """`repeats` continuations of each left-padded prompt: token ids [P * repeats, <= max_new_tokens],
    rows of one prompt together, pad after each row's first EOS. temperature 0 decodes greedily.

    compact=False keeps finished rows in the batch (fed padding, as generate() does), with
    packed_weights=False the products are the model's own, and multinomial=True samples with
    torch.multinomial as generate() does: the three make the random numbers drawn, and so the
    tokens, the same as generate()'s for the same seed. Packed weights change the logits by
    rounding only, and the default sampler draws from the same distribution (see _pick and
    tests/test_generation.py). bf16: the linear layers' products in bf16 (see the module's docstring);
    None chooses them where the CPU has native bf16 matmuls.
    """
    if not _has_plain_cache(model):
        return _generate_with_transformers(model, prompt_ids, prompt_mask, repeats, max_new_tokens, eos_ids, pad_id,
                                           temperature, top_p, top_k)
    with _decode_attention(model), _packed_linear_weights(model, enabled=packed_weights, bf16=bf16) as packed:
        prompt_cache, logits = prefill_prompts(model, prompt_ids, prompt_mask)
        row_prompt = torch.arange(len(prompt_ids), device=prompt_ids.device).repeat_interleave(repeats)
        context = _shared_context(prompt_cache, prompt_mask, row_prompt, packed)
        del prompt_cache  # the context holds its own copy
        return _decode(model, context, logits[row_prompt, -1].float(), max_new_tokens, eos_ids, pad_id,
                       logits_warpers(temperature, top_p, top_k) if temperature > 0 else None, compact,
                       multinomial=multinomial, packed=packed)


def _decode(model, context: SharedContext, next_logits: torch.Tensor, max_new_tokens: int, eos_ids: list[int],
            pad_id: int, warpers: LogitsProcessorList | None, compact: bool = True, on_leave=None,
            multinomial: bool = False, packed: PackedWeights | None = None) -> torch.Tensor:
    """The decode loop: up to `max_new_tokens` tokens for each row, after its context (the prefilled
    prompts, shared by their rows), from each row's next-token logits [rows, V]. The rows' own tokens
    go to the decode step's cache. Returns the tokens [rows, steps], pad after each row's first EOS.
    `on_leave(output, output_rows, batch_rows, keys_values)` is called for rows about to leave the
    batch (compacted away, or at the end); `keys_values(batch_row, written)` gives that row's whole
    cache (context, then its first `written` tokens) while it is still there."""
    device = next_logits.device
    rows = len(next_logits)
    eos = torch.tensor(eos_ids, device=device)
    forward = LlamaDecodeStep(model, packed, context, rows, max_new_tokens) \
        if packed and LlamaDecodeStep.covers(model, packed) else ModelDecodeStep(model, context, rows, max_new_tokens)
    positions = context.mask.sum(-1)[context.row_context]

    def keys_values(batch_row: int, written: int):
        keys, values = context.row_keys_values(batch_row)
        if written:  # then the decode step has cached them
            own_keys, own_values = forward.own_keys_values(batch_row, written)
            keys = [torch.cat([k, own], 1) for k, own in zip(keys, own_keys, strict=True)]
            values = [torch.cat([v, own], 1) for v, own in zip(values, own_values, strict=True)]
        return keys, values

    output = torch.full((rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    active = torch.arange(rows, device=device)  # the output row of each batch row
    unfinished = torch.ones(rows, dtype=torch.bool, device=device)
    steps = 0
    for step in range(max_new_tokens):
        raise_if_cancelled()
        tokens = _pick(next_logits, warpers, multinomial)
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
                on_leave(output, active[leaving], leaving, keys_values)
            context.keep_rows(keep)
            forward.keep_rows(keep)
            active, tokens, positions, unfinished = active[keep], tokens[keep], positions[keep], unfinished[keep]
        next_logits = forward(tokens, positions, step)
        positions = positions + 1
    if on_leave is not None:
        on_leave(output, active, torch.arange(len(active), device=device), keys_values)
    return output[:, :steps]


def _shared_context(cache, mask: torch.Tensor, row_context: torch.Tensor,
                    packed: PackedWeights | None) -> SharedContext:
    """The prefilled contexts as the decode loop reads them: kept in bf16 when the products are bf16
    and reading the contexts costs more than reading the weights.

    Below that, the casts around their products cost about what reading half the bytes saves, and
    bf16 would only move near-tied greedy answers: measured, 8 rows of one 311-token prompt (14 MB)
    decoded 7% slower, an arithmetic evaluation (32 problems a batch, 150 MB against 270 MB of bf16
    weights) no faster; 30 Wordle games' prompts (620 MB) 1.25x faster."""
    keys, values = [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers]
    in_bf16 = packed is not None and packed.bf16 and sum(t.nbytes for t in keys + values) > packed.nbytes
    return SharedContext(keys, values, mask, row_context, dtype=torch.bfloat16 if in_bf16 else None)


@dataclass
class SequenceCache:
    """What a conversation has computed so far, kept between its turns: its tokens and, for a model
    the decode loop covers, their keys and values at every layer ([Hkv, L, D] each, no padding)."""

    tokens: list[int]
    keys: list[torch.Tensor] | None = None
    values: list[torch.Tensor] | None = None


@_in_inference_mode
def continue_sequences(model, caches: list[SequenceCache | None], new_ids: list[list[int]], max_new_tokens: int,
                       eos_ids: list[int], pad_id: int, temperature: float = 1.0, top_p: float = 1.0,
                       top_k: int = 0, bf16: bool | None = None) -> tuple[list[list[int]], list[SequenceCache]]:
    """One continuation of each sequence (a conversation's next reply): its cache of the tokens so far
    (None to start one) and the tokens since (at least one). Returns each row's sampled tokens, up to
    and including its EOS, and its cache, which then covers everything but the last sampled token.

    Only the new tokens are prefilled, over the kept keys and values, so a conversation's earlier
    turns are never computed again; new sequences whose tokens are alike (a group's shared prompt)
    are prefilled once, their common beginning once for all. Models the decode loop does not cover
    regenerate from the whole sequence each time. bf16 as in generate().
    """
    device = next(model.parameters()).device
    if not _has_plain_cache(model):
        whole = [(cache.tokens if cache else []) + ids for cache, ids in zip(caches, new_ids, strict=True)]
        prompt_ids, prompt_mask = (t.to(device) for t in pack_prompts(whole, pad_id))
        output = generate(model, prompt_ids, prompt_mask, 1, max_new_tokens, eos_ids, pad_id, temperature, top_p, top_k,
                          bf16=bf16)
        replies = [_reply(row, eos_ids) for row in output.tolist()]
        return replies, [SequenceCache(tokens + reply[:-1]) for tokens, reply in zip(whole, replies, strict=True)]
    if any(cache is None for cache in caches) and not all(cache is None for cache in caches):
        raise ValueError("continue_sequences: start every sequence together, or continue every one")
    warpers = logits_warpers(temperature, top_p, top_k) if temperature > 0 else None
    rows = len(new_ids)
    done: list[SequenceCache | None] = [None] * rows
    context_tokens = [(cache.tokens if cache else []) + ids for cache, ids in zip(caches, new_ids, strict=True)]
    with _decode_attention(model), _packed_linear_weights(model, bf16=bf16) as packed:
        if caches[0] is None:
            context_cache, context_mask, row_context, logits = _prefill_new(model, new_ids, pad_id, device)
        else:
            context_cache, context_mask, logits = _prefill_continued(model, caches, new_ids, pad_id, device)
            row_context = torch.arange(rows, device=device)
        context = _shared_context(context_cache, context_mask, row_context, packed)
        del context_cache  # the context holds its own copy

        def keep_caches(output, output_rows, batch_rows, keys_values):
            for output_row, batch_row in zip(output_rows.tolist(), batch_rows.tolist()):
                written = len(_reply(output[output_row].tolist(), eos_ids)) - 1  # the last token is not fed yet
                keys, values = keys_values(batch_row, written)
                done[output_row] = SequenceCache(context_tokens[output_row] + output[output_row, :written].tolist(),
                                                 keys, values)

        output = _decode(model, context, logits, max_new_tokens, eos_ids, pad_id, warpers, on_leave=keep_caches,
                         packed=packed)
    return [_reply(row, eos_ids) for row in output.tolist()], done


def _prefill_new(model, new_ids: list[list[int]], pad_id: int, device):
    """The contexts of new sequences: alike ones prefilled once (and kept once), the beginning all share
    once for all. Returns the distinct contexts' cache and mask, each row's context, its logits."""
    distinct = list(dict.fromkeys(tuple(ids) for ids in new_ids))
    index = torch.tensor([distinct.index(tuple(ids)) for ids in new_ids], device=device)
    prompt_ids, prompt_mask = (t.to(device) for t in pack_prompts([list(ids) for ids in distinct], pad_id))
    cache, logits = prefill_prompts(model, prompt_ids, prompt_mask)
    return cache, prompt_mask, index, logits[index, -1].float()


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


def _pick(logits: torch.Tensor, warpers: LogitsProcessorList | None, multinomial: bool = False) -> torch.Tensor:
    """The next token of each row: the argmax without warpers, else a sample from the warped softmax.

    torch.multinomial (generate()'s sampler) draws an exponential number for every vocabulary entry
    of every row, which at 64 rows of a 49k vocabulary was a sixth of a decode step on CPU. The
    default draws one uniform number per row instead (`_inverse_cdf`): the same distribution.
    """
    if warpers is None:
        return logits.argmax(-1)
    probs = torch.softmax(warpers(None, logits), dim=-1)
    if multinomial:
        return torch.multinomial(probs, num_samples=1).squeeze(1)
    return _inverse_cdf(probs)


def _inverse_cdf(probs: torch.Tensor) -> torch.Tensor:
    """Where one uniform number per row falls in its cumulative distribution [rows, V] -> [rows].

    The cumulative sum is taken in two levels, over blocks of SAMPLER_BLOCK entries and then within
    the block the number falls in: a cumulative sum is a sequential loop, and over the whole 49k
    vocabulary of 64 rows it took 9-14 ms of a ~110 ms decode step, where the two levels take 3 ms.
    A block's entries add in fp32 (a few hundred of them: relative error ~1e-7, like the softmax's
    own), the cumulative sums in float64, so the sums add no visible bias; casting the whole
    distribution to float64 instead cost more than the rest of the sampler together. The number is
    kept below each level's total, so entries the warpers removed (no width) are never picked.
    """
    rows, vocabulary = probs.shape
    padding = -vocabulary % SAMPLER_BLOCK
    blocks = (torch.nn.functional.pad(probs, (0, padding)) if padding else probs).view(rows, -1, SAMPLER_BLOCK)
    block_ends = blocks.sum(-1).double().cumsum(-1)  # [rows, blocks]
    total = block_ends[:, -1:]
    point = torch.minimum(torch.rand(rows, 1, dtype=torch.float64, device=probs.device) * total, _just_below(total))
    block = torch.searchsorted(block_ends, point, right=True)  # [rows, 1]
    block_start = torch.where(block > 0, block_ends.gather(1, (block - 1).clamp(min=0)), 0.0)
    within = blocks.gather(1, block[:, :, None].expand(-1, -1, SAMPLER_BLOCK)).squeeze(1).double().cumsum(-1)
    offset = torch.minimum(point - block_start, _just_below(within[:, -1:]))
    return (block * SAMPLER_BLOCK + torch.searchsorted(within, offset, right=True)).squeeze(1)


def _just_below(value: torch.Tensor) -> torch.Tensor:
    return value.nextafter(torch.zeros_like(value))


@contextlib.contextmanager
def _decode_attention(model):
    """Attention runs through decode_attention while the block runs (the decode loop's shared
    contexts need it; `_has_plain_cache` keeps other attention implementations off the loop)."""
    current = model.config._attn_implementation
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.set_attn_implementation(DECODE_ATTENTION)
    try:
        yield
    finally:
        base.set_attn_implementation(current)


def decodes_in_bf16(model, bf16: bool | None = None) -> bool:
    """Whether the decode loop runs the linear layers' products in bf16: asked for (bf16=True), or
    chosen (None) where the CPU has native bf16 matmuls; only ever for fp32 weights it packs."""
    return _bf16_asked(bf16) and bool(_packable_linears(model))


def _bf16_asked(bf16: bool | None) -> bool:
    return models.cpu_has_native_bf16() if bf16 is None else bf16


@contextlib.contextmanager
def _packed_linear_weights(model, enabled: bool = True, bf16: bool | None = None):
    """On CPU, every linear layer multiplies by a packed copy of its weight while the block runs;
    a LoRA layer's copy has its active adapters merged in (W + scale * B A), so it is one product,
    and the layers that read one input are one product together (`_fused_products`). With bf16 the
    copies are bf16, and so are the products' inputs (see the module's docstring)."""
    linears = _packable_linears(model) if enabled else []
    in_bf16 = bool(linears) and _bf16_asked(bf16)
    fused = _fused_products(model, linears, in_bf16)
    for module in linears:
        if "forward" not in vars(module):  # not a part of a fused product
            module.forward = _packed_product(_effective_weight(module), _bias(module), in_bf16)
    try:
        yield PackedWeights(linears, in_bf16, fused) if linears else None
    finally:
        for module in linears:
            del module.forward


def _fused_products(model, linears: list[torch.nn.Module], bf16: bool) -> dict[int, FusedProduct]:
    """For a model of a type LlamaDecodeStep computes: a FusedProduct for each attention's q/k/v
    and each MLP's gate/up among the `linears`, by the id of the attention or MLP module; each
    part's forward is set to its share of the product."""
    if model.config.model_type not in LlamaDecodeStep.MODEL_TYPES:
        return {}
    packable = {id(module) for module in linears}
    fused = {}
    for parent in model.modules():
        for names in (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj")):
            parts = [getattr(parent, name, None) for name in names]
            if all(part is not None and id(part) in packable for part in parts) \
                    and len({_bias(part) is None for part in parts}) == 1:
                fused[id(parent)] = product = FusedProduct(parts, bf16)
                for index, part in enumerate(parts):
                    part.forward = product.forward_of(index)
    return fused


class FusedProduct:
    """One packed product for linear layers that read the same input: a Llama-family attention's
    q, k and v, or its MLP's gate and up. `product` gives their outputs side by side (the fused
    decode step's use); `forward_of(i)` is part i's forward: the model's own forward (the prefill)
    calls the parts one after the other on one input, so the first call computes the product and
    the others take their share of it; it is dropped once every part has taken its share."""

    def __init__(self, parts: list[torch.nn.Module], bf16: bool):
        biases = [_bias(part) for part in parts]
        self.product = _packed_product(torch.cat([_effective_weight(part) for part in parts]),
                                       None if biases[0] is None else torch.cat(biases), bf16)
        self.sizes = [_base_weight(part).shape[0] for part in parts]
        self._input = self._shares = None
        self._untaken = 0

    def forward_of(self, index: int):
        def forward(x, *args, **kwargs):
            if x is not self._input:
                self._input, self._shares, self._untaken = x, self.product(x).split(self.sizes, -1), len(self.sizes)
            share = self._shares[index]
            self._untaken -= 1
            if not self._untaken:
                self._input = self._shares = None
            return share

        return forward


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
    weights = [_base_weight(m) for m in chosen]
    if any(w.dtype != torch.float32 for w in weights) or sum(w.numel() * 4 for w in weights) > PACKED_WEIGHTS_MAX_BYTES:
        return []
    return chosen


def _is_lora(module) -> bool:
    return hasattr(module, "lora_A") and hasattr(module, "get_base_layer")


def _base_weight(module) -> torch.Tensor:
    """A linear layer's own weight (a LoRA layer's base weight, without its adapter)."""
    return module.get_base_layer().weight if _is_lora(module) else module.weight


def _bias(module) -> torch.Tensor | None:
    return module.get_base_layer().bias if _is_lora(module) else module.bias


def _effective_weight(module) -> torch.Tensor:
    weight = _base_weight(module).detach()
    if not _is_lora(module) or module.disable_adapters:
        return weight
    for name in module.active_adapters:
        if name in module.lora_A:
            weight = module.get_delta_weight(name).detach().add_(weight)  # into the fresh delta: one copy fewer
    return weight


@dataclass
class PackedWeights:
    """What `_packed_linear_weights` did: these layers multiply by packed copies, in bf16 or fp32,
    some of them as parts of fused products (by the id of their attention or MLP module)."""

    layers: list[torch.nn.Module]
    bf16: bool
    fused: dict[int, FusedProduct]

    @property
    def nbytes(self) -> int:
        """The bytes of the packed copies: what a decode step reads of the weights."""
        return sum(_base_weight(module).numel() for module in self.layers) * (2 if self.bf16 else 4)


def _packed_product(weight: torch.Tensor, bias: torch.Tensor | None, bf16: bool):
    """x -> x W^T + b by a copy of W packed once into oneDNN's blocked layout (bf16 products if asked)."""
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.bfloat16() if bf16 else weight, None)
    return _packed_bf16_forward(packed, bias) if bf16 else _packed_forward(packed, bias)


def _packed_forward(packed: torch.Tensor, bias: torch.Tensor | None):
    def forward(x, *args, **kwargs):
        rows = x.reshape(-1, x.shape[-1])
        return torch.ops.mkldnn._linear_pointwise(rows, packed, bias, "none", [], "").reshape(*x.shape[:-1], -1)

    return forward


def _packed_bf16_forward(packed: torch.Tensor, bias: torch.Tensor | None):
    def forward(x, *args, **kwargs):
        rows = x.reshape(-1, x.shape[-1]).bfloat16()
        output = torch.ops.mkldnn._linear_pointwise(rows, packed, None, "none", [], "").float()
        return (output if bias is None else output + bias).reshape(*x.shape[:-1], -1)

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
