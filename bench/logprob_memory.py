"""Peak memory and time of one training log-probability pass and its backward, over a batch of long
completions (a multi-turn episode batch's shape), with the bundled model and a LoRA adapter.

    python -m bench.logprob_memory --checkpointing                 12 rows x 1,300 tokens after a 300-token prompt
    python -m bench.logprob_memory --rows 12 --tokens 400          without gradient checkpointing
    python -m bench.logprob_memory --checkpointing --4bit          the base model's weights in 4-bit (QLoRA)

Run each setting in its own process: the peak is the process's maximum resident set size.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rft.config import LoraConfig, ModelConfig  # noqa: E402
from rft.grpo.sampler import Rollout, completion_logprobs  # noqa: E402
from rft.models import load_base_model, wrap_with_lora  # noqa: E402


def peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=12, help="completions (two prompts, half each)")
    parser.add_argument("--tokens", type=int, default=1300, help="tokens per completion")
    parser.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on")
    parser.add_argument("--4bit", dest="four_bit", action="store_true", help="the base model in 4-bit NF4 (QLoRA)")
    args = parser.parse_args()

    base = ModelConfig(dtype="float32", gradient_checkpointing=args.checkpointing, load_in_4bit=args.four_bit)
    model = wrap_with_lora(load_base_model(base), LoraConfig())
    model.train()
    torch.manual_seed(0)
    prompts = torch.randint(100, 20000, (2, 300))
    completions = torch.randint(100, 20000, (args.rows, args.tokens))
    rollout = Rollout(prompts, torch.ones_like(prompts), args.rows // 2, completions,
                      torch.ones(args.rows, args.tokens), [""] * args.rows, torch.zeros(args.rows, dtype=torch.bool),
                      0.0)
    loaded = peak_gb()
    started = time.perf_counter()
    logp, _ = completion_logprobs(model, rollout, temperature=1.0)
    logp.mean().backward()
    print(f"{args.rows} rows x {args.tokens} tokens, gradient checkpointing {'on' if args.checkpointing else 'off'}, "
          f"base weights {'4-bit' if args.four_bit else 'fp32'}: "
          f"peak resident memory {peak_gb():.1f} GB ({loaded:.1f} GB after loading), "
          f"{time.perf_counter() - started:.0f} s for the pass and its backward")


if __name__ == "__main__":
    main()
