"""This trainer's GRPO loss against TRL's, variant by variant, on identical tensors.

    python -m bench.crosscheck_trl        (make crosscheck; TRL comes from requirements-bench.txt)

For each variant, the same random per-token tensors (log-probabilities with a gradient, old and
reference log-probabilities, advantages of both signs, a mask of uneven lengths, entropies) go
through `rft.grpo.trainer.micro_batch_loss`, the function the trainer calls, and through TRL
1.16's own `GRPOTrainer._compute_loss`: a trainer made without its constructor, with the
attributes that method reads, and its model pass replaced by one that returns the tensors. Both
run as one of two accumulated micro-batches, so the accumulation scaling is compared too. The
table shows the largest difference in the loss and in its gradient with respect to the
log-probabilities and the entropies (float64: differences near 1e-16 mean the same arithmetic).
"""

from __future__ import annotations

import dataclasses
import sys
from collections import defaultdict
from types import SimpleNamespace

import torch
import trl
from trl import GRPOTrainer

from rft.config import GRPOConfig
from rft.grpo.trainer import micro_batch_loss

ROWS, TOKENS, MAX_COMPLETION_LENGTH = 6, 7, 7
LENGTHS = [7, 3, 5, 1, 6, 4]
OTHER_MICRO_BATCH_TOKENS = 29  # active tokens of the step's other micro-batch (dapo and cispo divide by all)
ACCUMULATION = 2
TOLERANCE = 1e-9

# name -> (this project's grpo settings, old log-probs differ from the current ones)
VARIANTS: dict[str, tuple[dict, bool]] = {
    "grpo": ({}, True),
    "grpo, on-policy (rho = 1)": ({}, False),
    "grpo, KL without bias correction": ({"use_bias_correction_kl": False}, True),
    "grpo, no KL (beta 0)": ({"beta": 0.0}, True),
    "bnpo": ({"loss_type": "bnpo"}, True),
    "dr_grpo": ({"loss_type": "dr_grpo"}, True),
    "dapo (epsilon_high 0.28)": ({"loss_type": "dapo", "epsilon_high": 0.28}, True),
    "cispo (epsilon_high 5)": ({"loss_type": "cispo", "epsilon_high": 5.0}, True),
    "sapo": ({"loss_type": "sapo"}, True),
    "gspo (sequence level, grpo)": ({"importance_sampling_level": "sequence"}, True),
    "gspo, KL without bias correction": ({"importance_sampling_level": "sequence", "use_bias_correction_kl": False}, True),
    "gspo with sapo": ({"importance_sampling_level": "sequence", "loss_type": "sapo"}, True),
    "delta 2 (grpo)": ({"delta": 2.0}, True),
    "delta 2 (dapo)": ({"loss_type": "dapo", "delta": 2.0}, True),
    "top_entropy_quantile 0.2": ({"top_entropy_quantile": 0.2}, True),
    "top_entropy_quantile 0.5 (dapo)": ({"loss_type": "dapo", "top_entropy_quantile": 0.5}, True),
    "entropy_coef 0.01": ({"entropy_coef": 0.01}, True),
    "entropy_coef 0.01 (dr_grpo)": ({"loss_type": "dr_grpo", "entropy_coef": 0.01}, True),
    "entropy_coef 0.01 + top_entropy_quantile 0.2 (cispo)": (
        {"loss_type": "cispo", "epsilon_high": 5.0, "entropy_coef": 0.01, "top_entropy_quantile": 0.2}, True),
}


def random_batch(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=generator, dtype=torch.float64)

    logp = -3 * torch.rand(ROWS, TOKENS, generator=generator, dtype=torch.float64)
    return {
        "logp": logp,
        # log-ratios up to about +-2: ratios from 0.15 to 7 reach every clip, cap and gate
        "logp_old": logp + 0.7 * normal(ROWS, TOKENS),
        "logp_ref": logp + 0.3 * normal(ROWS, TOKENS),
        "advantages": normal(ROWS),
        "mask": (torch.arange(TOKENS)[None, :] < torch.tensor(LENGTHS)[:, None]).double(),
        "entropy": 4 * torch.rand(ROWS, TOKENS, generator=generator, dtype=torch.float64),
    }


def ours(grpo: GRPOConfig, batch: dict, off_policy: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logp = batch["logp"].clone().requires_grad_()
    entropy = batch["entropy"].clone().requires_grad_()
    logp_old = batch["logp_old"] if off_policy else logp.detach()
    global_active = float(batch["mask"].sum()) + OTHER_MICRO_BATCH_TOKENS
    parts = micro_batch_loss(grpo, MAX_COMPLETION_LENGTH, logp, logp_old, batch["logp_ref"] if grpo.beta > 0 else None,
                             batch["advantages"], batch["mask"], entropy, global_active, shares=ACCUMULATION)
    parts.loss.backward()
    return parts.loss.detach(), gradient(logp), gradient(entropy)


class OneProcess:
    """The accelerator calls _compute_loss makes, for one process."""

    num_processes = 1
    sync_gradients = True

    def pad_across_processes(self, tensor, dim=0, pad_index=0):
        return tensor

    def gather(self, tensor):
        return tensor

    def gather_for_metrics(self, tensor):
        return tensor

    def reduce(self, tensor, reduction="sum"):
        return tensor


def trl_trainer(grpo: GRPOConfig, logp: torch.Tensor, entropy: torch.Tensor) -> GRPOTrainer:
    """A GRPOTrainer with only what _compute_loss reads, in training mode, one of ACCUMULATION micro-batches."""
    trainer = object.__new__(GRPOTrainer)
    trainer.args = SimpleNamespace(
        use_bias_correction_kl=grpo.use_bias_correction_kl, delta=grpo.delta, steps_per_generation=ACCUMULATION,
        sapo_temperature_pos=grpo.sapo_temperature_pos, sapo_temperature_neg=grpo.sapo_temperature_neg)
    trainer.model = SimpleNamespace(training=True)
    trainer.accelerator = OneProcess()
    trainer.current_gradient_accumulation_steps = ACCUMULATION
    trainer.loss_type = grpo.loss_type
    trainer.importance_sampling_level = grpo.importance_sampling_level
    trainer.beta = grpo.beta
    trainer.epsilon_low = grpo.epsilon_low
    trainer.epsilon_high = grpo.epsilon_high if grpo.epsilon_high is not None else grpo.epsilon_low
    trainer.max_completion_length = MAX_COMPLETION_LENGTH
    trainer.top_entropy_quantile = grpo.top_entropy_quantile
    trainer.entropy_coef = grpo.entropy_coef
    trainer._entropy_bonus_enabled = grpo.entropy_coef != 0.0
    trainer.use_adaptive_entropy = False
    trainer.off_policy_mask_threshold = None
    trainer.use_vllm = False
    trainer.vllm_importance_sampling_correction = False
    trainer.aux_loss_enabled = False
    trainer._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    # The model pass: these tensors are what it would have returned.
    trainer._get_per_token_logps_and_entropies = lambda *args, **kwargs: (logp, entropy, None)
    return trainer


def theirs(grpo: GRPOConfig, batch: dict, off_policy: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    logp = batch["logp"].clone().requires_grad_()
    entropy = batch["entropy"].clone().requires_grad_()
    prompt = torch.ones(ROWS, 2, dtype=torch.long)
    inputs = {
        "prompt_ids": prompt, "prompt_mask": prompt,
        "completion_ids": torch.ones(ROWS, TOKENS, dtype=torch.long), "completion_mask": batch["mask"],
        "advantages": batch["advantages"],
        "num_items_in_batch": batch["mask"].sum() + OTHER_MICRO_BATCH_TOKENS,
    }
    if off_policy:
        inputs["old_per_token_logps"] = batch["logp_old"]
    if grpo.beta > 0:
        inputs["ref_per_token_logps"] = batch["logp_ref"]
    loss = trl_trainer(grpo, logp, entropy)._compute_loss(None, inputs)
    loss.backward()
    return loss.detach(), gradient(logp), gradient(entropy)


def gradient(leaf: torch.Tensor) -> torch.Tensor:
    return leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)


def crosscheck(seeds: tuple[int, ...] = (0, 1, 2)) -> list[dict]:
    """One row per variant: the largest |difference| over the seeds' batches."""
    rows = []
    for name, (settings, off_policy) in VARIANTS.items():
        grpo = dataclasses.replace(GRPOConfig(), **settings)
        loss_diff = grad_diff = 0.0
        for seed in seeds:
            batch = random_batch(seed)
            our_loss, our_logp_grad, our_entropy_grad = ours(grpo, batch, off_policy)
            trl_loss, trl_logp_grad, trl_entropy_grad = theirs(grpo, batch, off_policy)
            loss_diff = max(loss_diff, float((our_loss - trl_loss).abs()))
            grad_diff = max(grad_diff, float((our_logp_grad - trl_logp_grad).abs().max()),
                            float((our_entropy_grad - trl_entropy_grad).abs().max()))
        rows.append({"variant": name, "loss": float(our_loss), "loss_diff": loss_diff, "grad_diff": grad_diff})
    return rows


def main() -> int:
    rows = crosscheck()
    print(f"TRL {trl.__version__}, torch {torch.__version__}; {ROWS} completions x {TOKENS} tokens, float64, "
          f"one of {ACCUMULATION} accumulated micro-batches, seeds 0-2\n")
    print("| variant | loss (seed 2) | max abs loss diff | max abs grad diff |")
    print("|---|---:|---:|---:|")
    for row in rows:
        print(f"| {row['variant']} | {row['loss']:+.6f} | {row['loss_diff']:.1e} | {row['grad_diff']:.1e} |")
    failed = [row["variant"] for row in rows if max(row["loss_diff"], row["grad_diff"]) > TOLERANCE]
    if failed:
        print(f"\nDiffer from TRL by more than {TOLERANCE:g}: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
