"""Training-pass speed: the log-probability passes of one GRPO step, in three ways.

    python -m bench.training_pass --adapter runs/arith-sft/checkpoints/sft     the arithmetic recipe's step 1
    python -m bench.training_pass --preset wordle --adapter DIR                another recipe's

One step of the recipe is sampled once (seeded, its dynamic sampling included), then its
micro-batches go through the two passes a step makes after sampling, alternating the ways so that
a busy machine slows them alike: the reference policy's log-probabilities (no gradient; the KL
term's) and the policy's forward and backward passes (the trainer's optimise, one optimiser step).
The three ways (rft.grpo.sampler.completion_logprobs, rft.lm_head):
- "one pass, autograd head": every completion in one decoder pass padded to the longest, and the LM
  head differentiated by autograd (log-softmax, gather), as before passes and the fused head;
- "one pass, fused head": the same pass, the head's backward written by hand;
- "passes of N, fused head": completions longest first, N at a time (ROWS_PER_PASS, the default).
Each row gives the seconds of both passes and the share of the bf16 (or fp32) matrix-multiply
bound that the products of the completions' tokens reach (linear layers and head; attention left
out, the padding not counted as work).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.generation import flops_per_token, matmul_bound_gflops  # noqa: E402
from rft import lm_head, models  # noqa: E402
from rft.grpo import sampler  # noqa: E402
from rft.grpo.trainer import Trainer  # noqa: E402
from rft.presets import preset_config  # noqa: E402
from rft.runs import RunWriter  # noqa: E402


@contextlib.contextmanager
def way(rows_per_pass: int, fused_head: bool):
    """Run the block with `rows_per_pass` completions a decoder pass, and the LM head fused or not
    (a head that is not an nn.Linear takes lm_head's generic, autograd path)."""
    rows, final_states = sampler.ROWS_PER_PASS, lm_head.final_states

    def unfused(model, **inputs):
        states, head = final_states(model, **inputs)
        return states, (lambda hidden: head(hidden))

    sampler.ROWS_PER_PASS = rows_per_pass
    if not fused_head:
        lm_head.final_states = unfused
    try:
        yield
    finally:
        sampler.ROWS_PER_PASS, lm_head.final_states = rows, final_states


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="arithmetic", help="the recipe measured")
    parser.add_argument("--adapter", help="start from this adapter (a warm start's checkpoints/sft)")
    parser.add_argument("--step", type=int, default=1, help="the step whose prompts are sampled")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each way")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override, as train's")
    args = parser.parse_args(argv)

    overrides = ["sft.enabled=false"] + ([f"model.adapter={args.adapter}"] if args.adapter else []) + args.set
    config = preset_config(args.preset).with_overrides(overrides)
    with tempfile.TemporaryDirectory(prefix="training-pass-") as run_dir:
        measure(args, config, Path(run_dir))


def measure(args: argparse.Namespace, config, run_dir: Path) -> None:
    """Sample the step once in a throw-away run directory, then time each way on its micro-batches."""
    RunWriter(run_dir).create(config)
    trainer = Trainer(config, run_dir)
    trainer.setup()
    trainer.start_rewards(0)
    timings = {"generate": 0.0, "environment": 0.0, "score": 0.0, "train": 0.0}
    micro_batches = range(config.optim.gradient_accumulation_steps)
    batches = [trainer.rollout_and_score(args.step, micro, timings) for micro in micro_batches]
    trainer.assign_advantages(batches)
    trainer.rewards.close()

    tokens = sum(int(b.rollout.attention_mask.sum()) for b in batches)
    padded = sum(b.rollout.completion_ids.numel() for b in batches)
    head = trainer.model.get_base_model().get_output_embeddings()
    # Products per token: the reference pass's forward, the policy's forward, its backward to the
    # inputs (as much again: the base weights take no gradient) and the head's recomputation.
    work = tokens * (3 * flops_per_token(trainer.model.get_base_model(), 0) + 2 * head.weight.numel())
    precision = "bf16" if models.cpu_bf16_matmuls(trainer.device, config.model.dtype) else "fp32"
    bound = matmul_bound_gflops(torch.bfloat16 if precision == "bf16" else torch.float32, device=trainer.device)
    rows = [b.rollout.completion_ids.shape[0] for b in batches]
    print(f"{args.preset}, step {args.step}: {len(batches)} micro-batch(es) of {rows} "
          f"completions, {tokens} tokens ({padded} padded to each micro-batch's longest), "
          f"{torch.get_num_threads()} threads; {precision} matmul bound {bound:.0f} GFLOP/s\n")

    ways = {"one pass, autograd head": (10**6, False), "one pass, fused head": (10**6, True),
            f"passes of {sampler.ROWS_PER_PASS}, fused head": (sampler.ROWS_PER_PASS, True)}
    seconds = {name: {"reference": [], "policy": []} for name in ways}
    for _ in range(args.repeats + 1):  # the first round warms up
        for name, (rows_per_pass, fused_head) in ways.items():
            with way(rows_per_pass, fused_head):
                started = time.perf_counter()
                with torch.no_grad(), models.training_autocast(trainer.device, config.model.dtype), \
                        models.reference_policy(trainer.model):
                    for batch in batches:
                        sampler.completion_logprobs(trainer.model, batch.rollout, config.sampling.temperature)
                middle = time.perf_counter()
                trainer.optimise(batches, dict(timings))
                seconds[name]["reference"].append(middle - started)
                seconds[name]["policy"].append(time.perf_counter() - middle)

    print("| way | reference pass (s) | policy forward + backward (s) | both (s) | share of the matmul bound |")
    print("|---|---:|---:|---:|---:|")
    for name, measured in seconds.items():
        reference, policy = (statistics.median(measured[key][1:]) for key in ("reference", "policy"))
        share = work / (reference + policy) / 1e9 / bound
        print(f"| {name} | {reference:.2f} | {policy:.2f} | {reference + policy:.2f} | {share:.0%} |")


if __name__ == "__main__":
    main()
