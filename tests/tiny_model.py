"""A tiny random Llama (2 layers, width 64) on the bundled model's tokenizer, saved as an HF directory,
so tests and the soak go through the same loading, LoRA and generation paths as the bundled model,
in seconds."""

from __future__ import annotations

from pathlib import Path


def bundled_model_dir() -> Path:
    """The bundled SmolLM2 converted to safetensors (converted once, then cached)."""
    from rft.config import BUNDLED_MODEL
    from rft.models import resolve_model_dir

    return Path(resolve_model_dir(BUNDLED_MODEL))


def build_tiny_model(folder: Path, tokenizer_dir: Path, stop_every: int = 0) -> Path:
    """`stop_every` N > 0: every Nth token id also ends a reply (the generation config's EOS ids), so
    the random model's replies end after about N tokens, as a chat model's do (multi-turn tests)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        initializer_range=0.2,  # wide enough logits that a policy can move within a few steps
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    if stop_every:
        model.generation_config.eos_token_id = [tokenizer.eos_token_id] + list(range(1, len(tokenizer), stop_every))
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
