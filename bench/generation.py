"""Generation speed: the rollout generator (rft.generation) against transformers' generate().

    python -m bench.generation                        G in 8 / 32 / 64, 64 new tokens, a ~300-token prompt
    python -m bench.generation --rows 8 --tokens 256  other shapes

Both paths sample the same rows from the bundled SmolLM2-135M-Instruct with end-of-sequence turned
off, so every row decodes every token, alternating runs so that a busy machine slows both alike.
Where the CPU has native bf16 matmuls the rollout generator runs twice, with fp32 products and
with the bf16 ones it uses there by default. Each row of the table gives tokens per second, the
speed-up over generate(), and two shares of this machine's limits that each run reaches, both
measured in the same process: its arithmetic against the matrix-multiply bound of its precision,
and the bytes a decode step must read (every weight in its packed precision, and the rows' KV
cache) against the memory-copy bandwidth. Few rows are bound by memory, many by arithmetic.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rft import generation, models  # noqa: E402
from rft.config import BUNDLED_MODEL, ModelConfig  # noqa: E402

PROMPT_WORDS = 280  # with the chat template, a ~300-token prompt like the Wordle one


def matmul_bound_gflops(dtype: torch.dtype, size: int = 1024, repeats: int = 10) -> float:
    """What a large square matrix product reaches on this machine, in GFLOP/s."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def copy_bandwidth_gbs(megabytes: int = 512, repeats: int = 5) -> float:
    """What copying a large tensor reaches on this machine, in GB/s (bytes read + written)."""
    source = torch.ones(megabytes * 2**20 // 4)
    target = torch.empty_like(source)
    target.copy_(source)
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    return 2 * source.numel() * 4 * repeats / (time.perf_counter() - started) / 1e9


def bytes_per_step(model, rows: int, prompt_length: int, generated: int, weight_bytes: int = 4) -> float:
    """What one decode step reads: every weight once, the prompt's keys and values once (its rows
    share them), and each row's own tokens' keys and values."""
    weights = sum(p.numel() * weight_bytes for p in model.parameters())
    config = model.config
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * 4
    return weights + per_token * (prompt_length + rows * generated)


def flops_per_token(model, context: int) -> float:
    """Multiply-adds of one decoded token: every linear layer (the LM head too) and the attention
    over `context` cached positions."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    config = model.config
    attention = 2 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * context
    return 2 * (linear + attention)


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[8, 32, 64], help="sequences sampled together")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per sequence")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each path per row")
    args = parser.parse_args(argv)

    tokenizer = models.load_tokenizer(BUNDLED_MODEL)
    model = models.load_base_model(ModelConfig())
    text = tokenizer.apply_chat_template([{"role": "user", "content": "word " * PROMPT_WORDS}], tokenize=False,
                                         add_generation_prompt=True)
    prompt_ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_length = prompt_ids.shape[1]
    bounds = {"fp32": matmul_bound_gflops(torch.float32)}
    if models.cpu_has_native_bf16():
        bounds["bf16"] = matmul_bound_gflops(torch.bfloat16)
    bandwidth = copy_bandwidth_gbs()
    context = prompt_length + args.tokens // 2
    token_flops = flops_per_token(model, context)
    print(f"bundled SmolLM2-135M, {prompt_length}-token prompt, {args.tokens} new tokens, "
          f"{torch.get_num_threads()} threads, path: {generation.generation_path(model)}")
    print("matmul bound: " + ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in bounds.items())
          + f"; memory copy {bandwidth:.0f} GB/s")
    print(f"{token_flops / 1e9:.2f} GFLOP per decoded token\n")

    def ours(rows, bf16):
        return lambda: generation.generate(model, prompt_ids, prompt_mask, rows, args.tokens, [], tokenizer.pad_token_id,
                                           bf16=bf16)

    def transformers_generate(rows):
        return lambda: generation._generate_with_transformers(model, prompt_ids, prompt_mask, rows, args.tokens, [],
                                                              tokenizer.pad_token_id, 1.0, 1.0, 0)

    precisions = {"fp32": False, "bf16": True} if "bf16" in bounds else {"fp32": False}
    runs = {"generate()": transformers_generate} | {
        f"ours {name}": (lambda flag: lambda rows: ours(rows, flag))(flag) for name, flag in precisions.items()}
    print("| rows | " + " | ".join(f"{name} tok/s" for name in runs) + " | "
          + " | ".join(f"ours {name}: speed-up, share of the {name} bound, of the memory bandwidth"
                       for name in precisions) + " |")
    print("|---:|" + "---:|" * (len(runs) + len(precisions)))
    for rows in args.rows:
        for name, flag in precisions.items():
            ours(rows, flag)()  # warm-up
        seconds = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                seconds[name].append(timed(run(rows)))
        rates = {name: rows * args.tokens / statistics.median(values) for name, values in seconds.items()}
        cells = [f"{rate:.1f}" for rate in rates.values()]
        for name in precisions:
            rate = rates[f"ours {name}"]
            step_bytes = bytes_per_step(model, rows, prompt_length, args.tokens // 2, 2 if name == "bf16" else 4)
            cells.append(f"{rate / rates['generate()']:.2f}x, {rate * token_flops / 1e9 / bounds[name]:.0%}, "
                         f"{rate / rows * step_bytes / 1e9 / bandwidth:.0%}")
        print(f"| {rows} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
