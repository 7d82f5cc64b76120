"""The GRPO loss of one stored completion, token by token.

A completion in rollouts.jsonl at step N was sampled by the policy as it was before step N's
update: the checkpoint of step N-1, or for step 1 the policy training started from. Step N's
update produced checkpoint N. So, per token:

- p_sampled: its probability under the sampling policy (what the loss at step N started from),
- p_updated: under checkpoint N, after the update,
- ratio = p_updated / p_sampled, and whether clipping (epsilon from the run's config) would stop
  its gradient; with one pass per batch (mu = 1) the loss itself always saw ratio 1, so this
  ratio shows how far the step moved each token,
- p_ref: under the KL reference, and the k3 KL between the sampling policy and the reference
  (the KL the loss at step N penalised),
- contribution: the per-token objective min(ratio A, clip(ratio) A) - beta KL, the negative
  of the per-token loss.

The math is rft.grpo.loss's; the completion is re-encoded from its stored text, which can split
a few tokens differently from how they were sampled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from rft.grpo import loss as grpo_loss
from rft.grpo.sampler import Rollout, completion_logprobs, eos_token_ids
from rft.policies import Policy, PolicyCache, checkpoint_policy, start_policy
from rft.runs import list_checkpoints, read_config, read_rollouts, rollout_steps

TOKEN_COLUMNS = ["position", "token", "p_sampled", "p_updated", "p_ref", "ratio", "clipped", "kl", "contribution"]


class InspectError(ValueError):
    """A completion that cannot be inspected; the message says why and what to pick."""


@dataclass
class StepPolicies:
    sampling: Policy  # sampled step N's rollouts
    updated: Policy | None  # after step N's update; None when checkpoint N is not on disk
    reference: Policy


@dataclass
class TokenReport:
    step: int
    completion: str
    advantage: float
    tokens: pd.DataFrame  # TOKEN_COLUMNS, one row per completion token
    notes: list[str] = field(default_factory=list)

    def most_clipped(self, count: int = 10) -> pd.DataFrame:
        """Clipped tokens, those whose ratio left the trust region furthest first."""
        clipped = self.tokens[self.tokens["clipped"] != ""]
        distance = (clipped["ratio"] - 1).abs()
        return clipped.loc[distance.sort_values(ascending=False).index].head(count)

    def highest_kl(self, count: int = 10) -> pd.DataFrame:
        return self.tokens.sort_values("kl", ascending=False).head(count)


def inspectable_steps(run_dir: str | Path) -> list[int]:
    """Steps whose sampling policy is on disk: step 1, and every step right after a checkpoint."""
    checkpoints = set(list_checkpoints(run_dir))
    return [step for step in rollout_steps(run_dir) if step == 1 or step - 1 in checkpoints]


def policies_for_step(run_dir: str | Path, step: int) -> StepPolicies:
    run_dir = Path(run_dir)
    if step == 1:
        sampling = start_policy(run_dir)
    elif step - 1 in list_checkpoints(run_dir):
        sampling = checkpoint_policy(run_dir, step - 1)
    else:
        nearby = ", ".join(map(str, inspectable_steps(run_dir))) or "none"
        raise InspectError(f"step {step} was sampled by the policy after step {step - 1}, and no checkpoint of "
                           f"step {step - 1} is on disk. Steps that can be inspected: {nearby}.")
    updated = checkpoint_policy(run_dir, step) if step in list_checkpoints(run_dir) else None
    return StepPolicies(sampling, updated, start_policy(run_dir))


def stored_completion(run_dir: str | Path, step: int, group: int, sample: int) -> dict:
    """One completion of rollouts.jsonl with its prompt, advantage and truncation flag."""
    record = read_rollouts(run_dir, step)
    if record is None:
        raise InspectError(f"step {step} has no rollouts")
    groups = record.get("groups", [])
    if not 0 <= group < len(groups):
        raise InspectError(f"step {step} has {len(groups)} group(s); there is no group {group}")
    chosen = groups[group]
    if "prompt_text" not in chosen:
        raise InspectError(f"step {step}'s rollouts were written without the prompt text (an older run); "
                           "they cannot be re-scored")
    if not 0 <= sample < len(chosen["completions"]):
        raise InspectError(f"group {group} has {len(chosen['completions'])} completion(s); there is no sample {sample}")
    return {
        "prompt_text": chosen["prompt_text"],
        "completion": chosen["completions"][sample],
        "advantage": float(chosen["advantages"][sample]),
        "truncated": bool(chosen.get("truncated", [False] * len(chosen["completions"]))[sample]),
    }


def encode(tokenizer, model, prompt_text: str, completion: str, truncated: bool) -> Rollout:
    """The stored text as a one-completion rollout; a completion that ended by itself ends in EOS,
    which the loss counts as one of its tokens."""
    device = next(model.parameters()).device
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
    completion_ids = tokenizer(completion, add_special_tokens=False).input_ids
    if not truncated:
        completion_ids.append(eos_token_ids(model, tokenizer)[0])
    if not completion_ids:
        raise InspectError("the completion is empty: there are no tokens to inspect")
    completion_tensor = torch.tensor([completion_ids], device=device)
    return Rollout(prompt_ids, torch.ones_like(prompt_ids), 1, completion_tensor,
                   torch.ones_like(completion_tensor, dtype=torch.float), [completion], torch.tensor([truncated]), 0.0)


@torch.no_grad()
def token_logprobs_under(cache: PolicyCache, policy: Policy, stored: dict, temperature: float) -> tuple[torch.Tensor, list[str]]:
    model, tokenizer = cache.load(policy)
    rollout = encode(tokenizer, model, stored["prompt_text"], stored["completion"], stored["truncated"])
    logp, _ = completion_logprobs(model, rollout, temperature)
    pieces = [tokenizer.decode([token_id]) for token_id in rollout.completion_ids[0].tolist()]
    return logp[0].float().cpu(), pieces


def inspect_completion(cache: PolicyCache, run_dir: str | Path, step: int, group: int, sample: int) -> TokenReport:
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    stored = stored_completion(run_dir, step, group, sample)
    policies = policies_for_step(run_dir, step)
    temperature = config.sampling.temperature
    logp_sampled, pieces = token_logprobs_under(cache, policies.sampling, stored, temperature)
    notes = [f"Sampled by {policies.sampling.label}; KL reference: {policies.reference.label}.",
             "Tokens are re-encoded from the stored text; a few may split differently from how they were sampled."]
    if policies.updated is not None:
        logp_updated, _ = token_logprobs_under(cache, policies.updated, stored, temperature)
        notes.insert(1, f"Updated policy: {policies.updated.label} (after step {step}'s update).")
    else:
        logp_updated = logp_sampled
        notes.insert(1, f"No checkpoint of step {step} on disk: the ratio is 1, as the loss saw it with one pass per batch.")
    if policies.reference == policies.sampling:
        logp_ref = logp_sampled
    else:
        logp_ref, _ = token_logprobs_under(cache, policies.reference, stored, temperature)

    grpo = config.grpo
    eps_high = grpo.epsilon_high if grpo.epsilon_high is not None else grpo.epsilon_low
    advantage = torch.tensor([stored["advantage"]])
    objective, clipped_low, clipped_high = grpo_loss.clipped_surrogate(
        torch.exp(logp_updated - logp_sampled)[None], advantage, grpo.epsilon_low, eps_high)
    kl = grpo_loss.k3_kl(logp_sampled[None], logp_ref[None])
    contribution = -grpo_loss.per_token_loss(objective, kl, grpo.beta)

    tokens = pd.DataFrame({
        "position": range(len(pieces)),
        "token": pieces,
        "p_sampled": logp_sampled.exp().numpy(),
        "p_updated": logp_updated.exp().numpy(),
        "p_ref": logp_ref.exp().numpy(),
        "ratio": (logp_updated - logp_sampled).exp().numpy(),
        "clipped": ["low" if low else "high" if high else "" for low, high in zip(clipped_low[0].tolist(), clipped_high[0].tolist())],
        "kl": kl[0].numpy(),
        "contribution": contribution[0].numpy(),
    })
    return TokenReport(step, stored["completion"], stored["advantage"], tokens, notes)
