"""Generation speed: the rollout generator (rft.generation) against transformers' generate().

    python -m bench.generation                        G in 8 / 32 / 64, 64 new tokens, a ~300-token prompt
    python -m bench.generation --rows 8 --tokens 256  other shapes
    python -m bench.generation --device cuda --model DIR --rows 16 --tokens 256    on a GPU (bench/gpu.sh)

Both paths sample the same rows from the bundled SmolLM2-135M-Instruct with end-of-sequence turned
off, so every row decodes every token, alternating runs so that a busy machine slows both alike.
Where the CPU has native bf16 matmuls the rollout generator runs twice, with fp32 products and
with the bf16 ones it uses there by default. Each row of the table gives tokens per second, the
speed-up over generate(), and two shares of this machine's limits that each run reaches, both
measured in the same process: its arithmetic against the matrix-multiply bound of its precision,
and the bytes a decode step must read (every weight in its packed precision, and the rows' KV
cache) against the memory-copy bandwidth. Few rows are bound by memory, many by arithmetic.
On a GPU the model is bf16 (no packed copies: those are for CPUs), both limits are the GPU's, and
each row also gives the peak GPU memory of a call.
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


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so that a timer around it measures the work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_bound_gflops(dtype: torch.dtype, size: int | None = None, repeats: int = 10,
                        device: torch.device = torch.device("cpu")) -> float:
    """What a large square matrix product reaches on this machine, in GFLOP/s (a GPU needs a larger one)."""
    size = size or (8192 if device.type == "cuda" else 1024)
    a, b = torch.randn(size, size, dtype=dtype, device=device), torch.randn(size, size, dtype=dtype, device=device)
    torch.mm(a, b)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def copy_bandwidth_gbs(megabytes: int = 512, repeats: int = 5, device: torch.device = torch.device("cpu")) -> float:
    """What copying a large tensor reaches on this machine, in GB/s (bytes read + written)."""
    source = torch.ones(megabytes * 2**20 // 4, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(repeats):
        target.copy_(source)
    synchronize(device)
    return 2 * source.numel() * 4 * repeats / (time.perf_counter() - started) / 1e9


def bytes_per_step(model, rows: int, prompt_length: int, generated: int, weight_bytes: int = 4,
                   cache_bytes: int = 4) -> float:
    """What one decode step reads: every weight once, the prompt's keys and values once (its rows
    share them), and each row's own tokens' keys and values."""
    weights = sum(p.numel() * weight_bytes for p in model.parameters())
    config = model.config
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * config.head_dim * cache_bytes
    return weights + per_token * (prompt_length + rows * generated)


def flops_per_token(model, context: int) -> float:
    """Multiply-adds of one decoded token: every linear layer (the LM head too) and the attention
    over `context` cached positions."""
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    config = model.config
    attention = 2 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * context
    return 2 * (linear + attention)


def timed(run, device: torch.device) -> float:
    synchronize(device)
    started = time.perf_counter()
    run()
    synchronize(device)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[8, 32, 64], help="sequences sampled together")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per sequence")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each path per row")
    parser.add_argument("--model", default=BUNDLED_MODEL, help="a model reference, as model.name_or_path takes")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args(argv)

    device = models.choose_device(args.device)
    tokenizer = models.load_tokenizer(args.model)
    model = models.load_base_model(ModelConfig(name_or_path=args.model, device=args.device))
    text = tokenizer.apply_chat_template([{"role": "user", "content": "word " * PROMPT_WORDS}], tokenize=False,
                                         add_generation_prompt=True)
    prompt_ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
    prompt_mask = torch.ones_like(prompt_ids)
    prompt_length = prompt_ids.shape[1]
    on_gpu = device.type == "cuda"
    if on_gpu:  # the model itself is bf16 there
        bounds = {"bf16": matmul_bound_gflops(torch.bfloat16, device=device)}
    else:
        bounds = {"fp32": matmul_bound_gflops(torch.float32)}
        if models.cpu_has_native_bf16():
            bounds["bf16"] = matmul_bound_gflops(torch.bfloat16)
    bandwidth = copy_bandwidth_gbs(device=device)
    context = prompt_length + args.tokens // 2
    token_flops = flops_per_token(model, context)
    where = torch.cuda.get_device_name(device) if on_gpu else f"{torch.get_num_threads()} CPU threads"
    print(f"{args.model}, {prompt_length}-token prompt, {args.tokens} new tokens, {model.dtype}, {where}, "
          f"path: {generation.generation_path(model)}")
    print("matmul bound: " + ", ".join(f"{name} {value:.0f} GFLOP/s" for name, value in bounds.items())
          + f"; memory copy {bandwidth:.0f} GB/s")
    print(f"{token_flops / 1e9:.2f} GFLOP per decoded token\n")

    def ours(rows, bf16):
        return lambda: generation.generate(model, prompt_ids, prompt_mask, rows, args.tokens, [], tokenizer.pad_token_id,
                                           bf16=bf16)

    def transformers_generate(rows):
        return lambda: generation._generate_with_transformers(model, prompt_ids, prompt_mask, rows, args.tokens, [],
                                                              tokenizer.pad_token_id, 1.0, 1.0, 0)

    # On a CPU, fp32 and bf16 products of packed copies of the weights; on a GPU, the model's own bf16.
    precisions = {"bf16": None} if on_gpu else {"fp32": False, "bf16": True} if "bf16" in bounds else {"fp32": False}
    cache_bytes = model.dtype.itemsize
    runs = {"generate()": transformers_generate} | {
        f"ours {name}": (lambda flag: lambda rows: ours(rows, flag))(flag) for name, flag in precisions.items()}
    print("| rows | " + " | ".join(f"{name} tok/s" for name in runs) + " | "
          + " | ".join(f"ours {name}: speed-up, share of the {name} bound, of the memory bandwidth"
                       for name in precisions) + (" | peak GPU memory, generate() / ours (MB) |" if on_gpu else " |"))
    print("|---:|" + "---:|" * (len(runs) + len(precisions) + on_gpu))
    for rows in args.rows:
        for name, flag in precisions.items():
            ours(rows, flag)()  # warm-up
        seconds = {name: [] for name in runs}
        peak_mb = {}
        for _ in range(args.repeats):
            for name, run in runs.items():
                if on_gpu:
                    torch.cuda.reset_peak_memory_stats(device)
                seconds[name].append(timed(run(rows), device))
                if on_gpu:
                    peak_mb[name] = torch.cuda.max_memory_allocated(device) / 2**20
        rates = {name: rows * args.tokens / statistics.median(values) for name, values in seconds.items()}
        cells = [f"{rate:.1f}" for rate in rates.values()]
        for name in precisions:
            rate = rates[f"ours {name}"]
            step_bytes = bytes_per_step(model, rows, prompt_length, args.tokens // 2, 2 if name == "bf16" else 4,
                                        cache_bytes)
            cells.append(f"{rate / rates['generate()']:.2f}x, {rate * token_flops / 1e9 / bounds[name]:.0%}, "
                         f"{rate / rows * step_bytes / 1e9 / bandwidth:.0%}")
        if on_gpu:
            cells.append(" / ".join(f"{peak_mb[name]:,.0f}" for name in runs))
        print(f"| {rows} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
