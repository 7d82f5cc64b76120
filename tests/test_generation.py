"""The rollout generator: the same tokens as transformers' generate() for the same seed, the same
greedy text after finished rows leave the batch, a distribution that compaction does not change,
and the prompts' shared beginning computed once."""

import pytest
import torch

from rft import generation
from rft.data import render_prompt
from rft.models import generate_continuations, load_for_inference

PROMPTS = ["Hi", "Write a long and careful answer about the history of the number zero, please.", "Count to ten."]


def tiny(tiny_model_dir):
    model, tokenizer = load_for_inference(str(tiny_model_dir))
    texts = [render_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
    encoded = [tokenizer(t, add_special_tokens=False).input_ids for t in texts]
    return model, tokenizer, encoded


def end_tokens(tokenizer, share: int) -> list[int]:
    """One token in `share` counts as an end token, so that the tiny model's rows (its next-token
    distribution is broad) finish at different steps."""
    return list(range(1, len(tokenizer), share))


def test_same_seed_gives_the_same_tokens_as_transformers_generate(tiny_model_dir):
    model, tokenizer, encoded = tiny(tiny_model_dir)
    padded = tokenizer.pad({"input_ids": encoded}, padding=True, return_tensors="pt")
    prompt_ids, prompt_mask = padded["input_ids"], padded["attention_mask"]
    eos = end_tokens(tokenizer, 10)
    pad = tokenizer.pad_token_id
    for temperature, top_p, top_k in ((1.0, 1.0, 0), (0.7, 0.9, 20)):
        torch.manual_seed(5)
        ours = generation.generate(model, prompt_ids, prompt_mask, 4, 16, eos, pad, temperature, top_p, top_k,
                                   compact=False, packed_weights=False, multinomial=True)
        torch.manual_seed(5)
        theirs = model.generate(input_ids=prompt_ids.repeat_interleave(4, 0),
                                attention_mask=prompt_mask.repeat_interleave(4, 0), do_sample=True,
                                temperature=temperature, top_p=top_p, top_k=top_k or None, max_new_tokens=16,
                                eos_token_id=eos, pad_token_id=pad)[:, prompt_ids.shape[1]:]
        assert ours.shape == theirs.shape
        assert torch.equal(ours, theirs)
        assert (ours == pad).any() and not (ours == pad).all()  # some rows finished early, others did not


def test_finished_rows_leave_the_batch_without_changing_the_greedy_text(tiny_model_dir, monkeypatch):
    model, tokenizer, encoded = tiny(tiny_model_dir)
    prompt_ids, prompt_mask = generation.pack_prompts(encoded, tokenizer.pad_token_id)
    eos = end_tokens(tokenizer, 8)
    compactions = []
    keep_rows = generation.SharedContext.keep_rows
    monkeypatch.setattr(generation.SharedContext, "keep_rows", lambda context, keep: (compactions.append(len(keep)),
                                                                                         keep_rows(context, keep)))
    many = torch.cat([prompt_ids] * 4), torch.cat([prompt_mask] * 4)
    kept = generation.generate(model, *many, 1, 24, eos, tokenizer.pad_token_id, temperature=0, compact=False,
                               packed_weights=False)
    assert not compactions
    compacted = generation.generate(model, *many, 1, 24, eos, tokenizer.pad_token_id, temperature=0,
                                    packed_weights=False)
    assert compactions, "no row finished early enough to leave the batch"
    assert torch.equal(compacted, kept)


def test_compaction_keeps_the_distribution(tiny_model_dir):
    model, tokenizer, encoded = tiny(tiny_model_dir)
    prompt_ids, prompt_mask = generation.pack_prompts(encoded[:1], tokenizer.pad_token_id)
    eos = end_tokens(tokenizer, 12)

    def lengths(compact: bool) -> torch.Tensor:
        torch.manual_seed(11 if compact else 12)
        ids = generation.generate(model, prompt_ids, prompt_mask, 300, 16, eos, tokenizer.pad_token_id, compact=compact)
        return torch.isin(ids, torch.tensor(eos)).int().argmax(-1)  # where each row ended

    compacted, kept = lengths(True), lengths(False)
    assert compacted.float().std() > 0
    # Two-sample Kolmogorov-Smirnov at the 0.1% level: the largest gap between the two empirical
    # distributions of where rows ended stays below 1.95 * sqrt(2 / n).
    values = torch.arange(17)
    gap = ((compacted[:, None] <= values).float().mean(0) - (kept[:, None] <= values).float().mean(0)).abs().max()
    assert gap < 1.95 * (2 / len(kept)) ** 0.5, gap


def test_the_shared_beginning_of_several_prompts_runs_once(tiny_model_dir):
    model, tokenizer, encoded = tiny(tiny_model_dir)
    prompt_ids, prompt_mask = generation.pack_prompts(encoded, tokenizer.pad_token_id)
    shared = generation.shared_prefix_length(prompt_ids, prompt_mask)
    assert shared > 10  # the chat template's system message
    assert prompt_mask[:, :shared].all() and not prompt_mask[:, shared:].all()

    cache, logits = generation.prefill_prompts(model, prompt_ids, prompt_mask)
    padded = tokenizer.pad({"input_ids": encoded}, padding=True, return_tensors="pt")
    with torch.no_grad():
        plain = model(**padded, position_ids=generation.positions_from_mask(padded["attention_mask"])).logits[:, -1:]
    assert torch.allclose(logits, plain, atol=1e-4)

    texts = [tokenizer.decode(ids) for ids in encoded]
    greedy = generate_continuations(model, tokenizer, texts, 12)
    one_by_one = [generate_continuations(model, tokenizer, [text], 12)[0] for text in texts]
    assert greedy == one_by_one


def test_packed_weights_with_the_adapter_merged_give_the_same_greedy_text(tiny_model_dir):
    from rft.config import LoraConfig
    from rft.models import wrap_with_lora

    model, tokenizer, encoded = tiny(tiny_model_dir)
    model = wrap_with_lora(model, LoraConfig(rank=4, alpha=8))
    with torch.no_grad():  # an adapter that changes the text, so a merge that missed it would show
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.eval()
    prompt_ids, prompt_mask = generation.pack_prompts(encoded, tokenizer.pad_token_id)
    assert len(generation._packable_linears(model)) == 2 * 7 + 1  # every projection, and the LM head
    args = (model, prompt_ids, prompt_mask, 1, 16, [], tokenizer.pad_token_id)

    packed = generation.generate(*args, temperature=0, bf16=False)
    plain = generation.generate(*args, temperature=0, packed_weights=False)
    with model.disable_adapter():
        without_adapter = generation.generate(*args, temperature=0, packed_weights=False)
    assert torch.equal(packed, plain)
    assert not torch.equal(plain, without_adapter)
    assert not packed.is_inference()  # decoded in inference mode, given back as a tensor training can use
    with torch.no_grad():
        with generation._packed_linear_weights(model, bf16=False):
            packed_logits = model(input_ids=prompt_ids, attention_mask=prompt_mask).logits
        with generation._packed_linear_weights(model, bf16=True):
            bf16_logits = model(input_ids=prompt_ids, attention_mask=prompt_mask).logits
        plain_logits = model(input_ids=prompt_ids, attention_mask=prompt_mask).logits
        with model.disable_adapter():
            logits_without_adapter = model(input_ids=prompt_ids, attention_mask=prompt_mask).logits
    assert torch.allclose(packed_logits, plain_logits, atol=1e-4)
    # bf16 products round each layer's inputs to 8 significant bits: close to fp32, and far closer to
    # it than the model without its adapter is (so the bf16 copies have the adapter merged in too).
    bf16_error = (bf16_logits - plain_logits).abs().mean()
    adapter_effect = (logits_without_adapter - plain_logits).abs().mean()
    assert bf16_error < 0.05 * adapter_effect
    assert all("forward" not in vars(m) for m in model.modules())  # the model is given back as it was


def test_bf16_decoding_samples_from_nearly_the_distribution_fp32_gives(bundled_model_dir):
    """bf16 products cannot give fp32's tokens bit for bit; on the bundled model their next-token
    distribution stays within a thousandth of a nat of fp32's on average, along a whole reply."""
    model, tokenizer = load_for_inference(str(bundled_model_dir))
    text = render_prompt(tokenizer, [{"role": "user", "content": "What is 17 + 25? Think step by step."}])
    prompt_ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    reply = generation.generate(model, prompt_ids, torch.ones_like(prompt_ids), 1, 48, [], tokenizer.pad_token_id,
                                temperature=0, bf16=False)
    whole = torch.cat([prompt_ids, reply], 1)
    with torch.no_grad():
        with generation._packed_linear_weights(model, bf16=False):
            fp32 = model(input_ids=whole).logits.log_softmax(-1)
        with generation._packed_linear_weights(model, bf16=True):
            bf16 = model(input_ids=whole).logits.float().log_softmax(-1)
    kl = (fp32.exp() * (fp32 - bf16)).sum(-1)
    assert float(kl.mean()) < 0.003 and float(kl.max()) < 0.05
    assert (fp32.argmax(-1) == bf16.argmax(-1)).float().mean() > 0.95
    assert generation.decodes_in_bf16(model, True) and not generation.decodes_in_bf16(model, False)
    assert not generation.decodes_in_bf16(model.to(torch.bfloat16), True)  # only fp32 weights are packed


def test_the_models_own_forward_computes_each_fused_product_once(tiny_model_dir):
    """Under packed weights a Llama layer's q, k and v (and its MLP's gate and up) are one product:
    the model's own forward (the prefill) computes it once per layer and input, its three parts
    take their shares of it, and nothing is held once they have."""
    model, tokenizer, encoded = tiny(tiny_model_dir)
    prompt_ids, prompt_mask = generation.pack_prompts(encoded, tokenizer.pad_token_id)
    layers = model.config.num_hidden_layers
    with torch.no_grad(), generation._packed_linear_weights(model, bf16=False) as packed:
        assert len(packed.fused) == 2 * layers
        calls = []
        for key, fused in packed.fused.items():
            fused.product = (lambda product, key: lambda x: calls.append(key) or product(x))(fused.product, key)
        fused_logits = model(input_ids=prompt_ids, attention_mask=prompt_mask).logits
        assert sorted(calls) == sorted(packed.fused)
        assert all(fused._input is None and fused._shares is None for fused in packed.fused.values())
    plain_logits = model(input_ids=prompt_ids, attention_mask=prompt_mask).logits
    assert torch.allclose(fused_logits, plain_logits, atol=1e-4)


def teacher_forced_logits(monkeypatch, model, prompt_ids, prompt_mask, repeats, forced, eos_ids, pad_id, fused,
                          bf16):
    """The decode loop's next-token logits at every step while it is fed `forced` [rows, steps] instead
    of its samples, through LlamaDecodeStep (fused) or the model's own forward: a list, one [rows
    still in the batch, V] per step (rows that fed an end token leave as the loop drops them)."""
    logits_seen, active, ended = [], list(range(len(forced))), set()

    def feed_forced(logits, warpers, multinomial=False):
        nonlocal active
        if len(logits) < len(active):
            active = [row for row in active if row not in ended]
        step = len(logits_seen)
        logits_seen.append(logits.clone())
        tokens = forced[active, step]
        ended.update(row for row, token in zip(active, tokens.tolist()) if token in eos_ids)
        return tokens

    with monkeypatch.context() as patch:
        patch.setattr(generation, "_pick", feed_forced)
        if not fused:
            patch.setattr(generation.LlamaDecodeStep, "covers", classmethod(lambda cls, model, packed: False))
        generation.generate(model, prompt_ids, prompt_mask, repeats, forced.shape[1], eos_ids, pad_id, temperature=0,
                            bf16=bf16)
    return logits_seen


def test_the_llama_decode_step_computes_the_models_own_logits(tiny_model_dir, monkeypatch):
    """The fused decode step (one product for q, k, v and one for gate and up, the adapter merged in)
    gives the model's own next-token logits at every step: over padded prompts of different lengths,
    their rows in the order generate() lays them out and, after two rows end, in the compacted batch."""
    from rft.config import LoraConfig
    from rft.models import wrap_with_lora

    model, tokenizer, encoded = tiny(tiny_model_dir)
    model = wrap_with_lora(model, LoraConfig(rank=4, alpha=8))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    model.eval()
    with generation._packed_linear_weights(model, bf16=False) as packed:
        assert generation.LlamaDecodeStep.covers(model, packed)
    prompt_ids, prompt_mask = generation.pack_prompts(encoded, tokenizer.pad_token_id)
    torch.manual_seed(0)
    end = tokenizer.eos_token_id
    forced = torch.randint(3, len(tokenizer), (6, 12))
    forced[forced == end] = 3
    forced[1, 3] = forced[4, 5] = end  # two rows end: the batch is compacted after step 5
    args = (model, prompt_ids, prompt_mask, 2, forced, [end], tokenizer.pad_token_id)

    fused = teacher_forced_logits(monkeypatch, *args, fused=True, bf16=False)
    own = teacher_forced_logits(monkeypatch, *args, fused=False, bf16=False)
    assert [len(step) for step in fused] == [6] * 6 + [4] * 6
    assert [step.shape for step in fused] == [step.shape for step in own]
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(fused, own))


def test_the_llama_decode_step_computes_a_qwen2_models_own_logits_with_its_biases(monkeypatch):
    """Qwen2's query, key and value products have biases: the fused q/k/v product carries them, and
    the fused step gives the model's own logits at every step."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    config = Qwen2Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("proj.bias"):
                param.normal_(0, 0.5)  # initialised to zero: make them count
    assert model.model.layers[0].self_attn.q_proj.bias.abs().sum() > 0
    with generation._packed_linear_weights(model, bf16=False) as packed:
        assert generation.LlamaDecodeStep.covers(model, packed)
    prompt_ids, prompt_mask = generation.pack_prompts([[5, 6, 7, 8, 9], [10, 11, 12]], pad_id=0)
    forced = torch.randint(3, 96, (4, 8))
    args = (model, prompt_ids, prompt_mask, 2, forced, [], 0)

    fused = teacher_forced_logits(monkeypatch, *args, fused=True, bf16=False)
    own = teacher_forced_logits(monkeypatch, *args, fused=False, bf16=False)
    assert len(fused) == len(own) == 8
    assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(fused, own))


@pytest.mark.parametrize("context_in_bf16", [False, True])
def test_the_llama_decode_step_in_bf16_stays_near_fp32s_distribution(bundled_model_dir, monkeypatch, context_in_bf16):
    """In bf16 (the products, and the prompt's keys and values where they take more bytes than the
    weights: the residual stream, the rows' own cache and the softmax stay fp32) the fused step's
    next-token distribution stays within a thousandth of a nat of the fp32 model's, along a sampled
    reply."""
    contexts, shared_context = [], generation._shared_context

    def recorded_context(*args, **kwargs):
        contexts.append(shared_context(*args, **kwargs))
        return contexts[-1]

    monkeypatch.setattr(generation, "_shared_context", recorded_context)
    if context_in_bf16:  # this prompt's cache is far smaller than the weights: lower the bar
        monkeypatch.setattr(generation.PackedWeights, "nbytes", 0)
    model, tokenizer = load_for_inference(str(bundled_model_dir))
    text = render_prompt(tokenizer, [{"role": "user", "content": "Write a short story about a cat."}])
    prompt_ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    prompt_mask = torch.ones_like(prompt_ids)
    torch.manual_seed(0)
    forced = generation.generate(model, prompt_ids, prompt_mask, 2, 40, [], tokenizer.pad_token_id, bf16=False)
    args = (model, prompt_ids, prompt_mask, 2, forced, [], tokenizer.pad_token_id)

    fp32 = torch.stack(teacher_forced_logits(monkeypatch, *args, fused=False, bf16=False)).log_softmax(-1)
    bf16 = torch.stack(teacher_forced_logits(monkeypatch, *args, fused=True, bf16=True)).log_softmax(-1)
    assert contexts[-1].keys[0].dtype == (torch.bfloat16 if context_in_bf16 else torch.float32)
    kl = (fp32.exp() * (fp32 - bf16)).sum(-1)
    assert float(kl.mean()) < 0.003 and float(kl.max()) < 0.05
    assert (fp32.argmax(-1) == bf16.argmax(-1)).float().mean() > 0.95


def test_attention_over_a_shared_context_equals_attention_over_each_rows_own_copy():
    """Cascade attention: rows that share a context (in any order, after some rows left) get exactly
    the attention they would over their own copy of its keys followed by their own tokens."""
    from types import SimpleNamespace

    torch.manual_seed(0)
    contexts, kv_heads, heads, head_dim, context_length, own_length = 3, 2, 6, 8, 7, 4
    keys, values = torch.randn(contexts, kv_heads, context_length, head_dim), torch.randn(contexts, kv_heads,
                                                                                            context_length, head_dim)
    context_mask = torch.ones(contexts, context_length, dtype=torch.long)
    context_mask[1, :3] = 0  # a left-padded context
    row_context = torch.tensor([2, 0, 1, 0, 2, 2, 1])
    shared = generation.SharedContext([keys], [values], context_mask, row_context)
    keep = torch.tensor([0, 1, 3, 4, 6])  # two rows leave
    shared.keep_rows(keep)
    rows = len(keep)
    query = torch.randn(rows, heads, 1, head_dim)
    own_keys, own_values = torch.randn(rows, kv_heads, own_length, head_dim), torch.randn(rows, kv_heads, own_length,
                                                                                          head_dim)
    own_mask = torch.ones(rows, 1, 1, own_length, dtype=torch.bool)
    own_mask[:, ..., 3] = False  # a column not written yet
    layer = SimpleNamespace(layer_idx=0)

    cascade, _ = generation.decode_attention(layer, query, own_keys, own_values, own_mask, scaling=0.3,
                                             shared_context=shared)
    copies = row_context[keep]
    whole_keys = torch.cat([keys[copies], own_keys], 2)
    whole_values = torch.cat([values[copies], own_values], 2)
    whole_mask = torch.cat([context_mask[copies].bool()[:, None, None, :], own_mask], -1)
    plain, _ = generation.decode_attention(layer, query, whole_keys, whole_values, whole_mask, scaling=0.3)
    assert torch.allclose(cascade, plain, atol=1e-6)
    in_order = generation.SharedContext([keys], [values], context_mask, torch.tensor([0, 0, 1, 1, 2, 2]))
    assert in_order.in_order and not shared.in_order
    ordered_query, ordered_keys = torch.randn(6, heads, 1, head_dim), torch.randn(6, kv_heads, own_length, head_dim)
    ordered_mask = own_mask[:1].expand(6, -1, -1, -1)
    cascade, _ = generation.decode_attention(layer, ordered_query, ordered_keys, ordered_keys, ordered_mask, scaling=0.3,
                                             shared_context=in_order)
    copies = torch.tensor([0, 0, 1, 1, 2, 2])
    plain, _ = generation.decode_attention(layer, ordered_query, torch.cat([keys[copies], ordered_keys], 2),
                                           torch.cat([values[copies], ordered_keys], 2),
                                           torch.cat([context_mask[copies].bool()[:, None, None, :], ordered_mask], -1),
                                           scaling=0.3)
    assert torch.allclose(cascade, plain, atol=1e-6)
    row_keys, _ = shared.row_keys_values(2)  # kept row 3: context 0, unpadded
    assert torch.equal(row_keys[0], keys[0])
    row_keys, _ = shared.row_keys_values(4)  # kept row 6: context 1, its padding dropped
    assert torch.equal(row_keys[0], keys[1][:, 3:])

    # Kept in bf16, the context's products round: near the fp32 attention, not equal to it. A row's
    # cache comes back in the dtype it was given in.
    in_bf16 = generation.SharedContext([keys], [values], context_mask, row_context, dtype=torch.bfloat16)
    in_bf16.keep_rows(keep)
    rounded, _ = generation.decode_attention(layer, query, own_keys, own_values, own_mask, scaling=0.3,
                                             shared_context=in_bf16)
    exact, _ = generation.decode_attention(layer, query, own_keys, own_values, own_mask, scaling=0.3,
                                           shared_context=shared)
    assert in_bf16.keys[0].dtype == in_bf16.values[0].dtype == torch.bfloat16 and rounded.dtype == torch.float32
    assert torch.allclose(rounded, exact, atol=0.03) and not torch.allclose(rounded, exact, atol=1e-4)
    row_keys, _ = in_bf16.row_keys_values(4)
    assert row_keys[0].dtype == torch.float32 and torch.equal(row_keys[0], keys[1][:, 3:].bfloat16().float())


@pytest.mark.parametrize("vocabulary", [50, 700])
def test_the_default_sampler_draws_from_the_same_distribution_as_multinomial(vocabulary):
    """One uniform number per row against the cumulative distribution: each token as often as its
    probability (a chi-square test, as torch.multinomial passes it), never one top-k removed. With
    700 entries the 20 kept ones lie in three sampler blocks, among removed ones, and the last block
    is padded."""
    torch.manual_seed(3)
    draws = 40000
    logits = torch.randn(1, vocabulary) * 2
    warpers = generation.logits_warpers(0.8, top_k=20)
    probs = torch.softmax(warpers(None, logits.clone()), -1)[0]
    for multinomial in (False, True):
        tokens = generation._pick(logits.expand(draws, -1).clone(), warpers, multinomial)
        counts = torch.bincount(tokens, minlength=vocabulary).double()
        assert counts[probs == 0].sum() == 0
        kept = probs > 0
        expected = probs[kept].double() * draws
        chi_square = float(((counts[kept] - expected) ** 2 / expected).sum())
        assert chi_square < 45.3, (multinomial, chi_square)  # the 99.9% quantile at 19 degrees of freedom


def test_model_dtype_float32_keeps_a_runs_generation_in_fp32(tiny_run_dir):
    from rft import models

    log = (tiny_run_dir / "logs.txt").read_text()  # a run with model.dtype: float32
    assert "generation: the rollout decode loop" in log and "in bf16" not in log
    cpu = torch.device("cpu")
    assert not models.cpu_bf16_matmuls(cpu, "float32")
    assert models.cpu_bf16_matmuls(cpu, "auto") == models.cpu_has_native_bf16()
