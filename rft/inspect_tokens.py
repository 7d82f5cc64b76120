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
- loss_ratio: the ratio the run's loss uses: the token's own, or under GSPO
  (importance_sampling_level: sequence) the completion's one sequence ratio,
- gate: under loss_type sapo, the share of the unclipped gradient SAPO's soft gate keeps (1 at
  ratio 1); empty for the other losses,
- entropy: the sampling policy's entropy at the position, and `trained`: False for the
  low-entropy tokens that top_entropy_quantile leaves out of the policy term (the threshold is
  taken over the completion's whole group, which is the trainer's micro-batch when
  prompts_per_step is 1),
- contribution: the per-token objective of the run's loss_type (min(ratio A, clip(ratio) A) for
  the clipped losses) on trained tokens, minus beta KL: the negative of the per-token loss,
- push: d(contribution) / d log p_updated, how hard and in which direction the loss moves the
  token's log-probability (before the loss_type's averaging over tokens): 0 where clipping or the
  entropy mask stops it, scaled by CISPO's capped weight or SAPO's gate; under GSPO each token
  also feels the other tokens' objectives through the shared ratio.

The math is rft.grpo.loss's. The trainer stores each completion's tokens as sampled, with their
log-probability and entropy under the sampling policy, so any step can be inspected: only the
updated policy (checkpoint N, for p_updated and the ratio) and the reference need loading. Rollouts
of older runs lack them: then the sampling policy is checkpoint N-1 (or the start, for step 1) and
the completion is re-encoded from its text, which can split a few tokens differently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from rft.config import GRPOConfig
from rft.grpo import loss as grpo_loss
from rft.grpo.sampler import Rollout, completion_logprobs, eos_token_ids
from rft.policies import Policy, PolicyCache, checkpoint_policy, start_policy
from rft.runs import list_checkpoints, read_config, read_rollouts, rollout_steps

TOKEN_COLUMNS = ["position", "token", "p_sampled", "p_updated", "p_ref", "ratio", "loss_ratio", "clipped", "gate",
                 "entropy", "trained", "environment", "kl", "contribution", "push"]


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
    """Steps whose rollouts stored the sampling policy's log-probabilities, and, for older runs,
    steps whose sampling policy is on disk: step 1, and every step right after a checkpoint."""
    checkpoints = set(list_checkpoints(run_dir))
    return [step for step in rollout_steps(run_dir)
            if step == 1 or step - 1 in checkpoints or _stores_sampling(run_dir, step)]


def _stores_sampling(run_dir: str | Path, step: int) -> bool:
    record = read_rollouts(run_dir, step)
    groups = record.get("groups", []) if record else []
    return bool(groups) and "logp" in groups[0]


def policies_for_step(run_dir: str | Path, step: int, stored_sampling: bool = False) -> StepPolicies:
    """The policies of step N. With `stored_sampling` (the rollouts hold its log-probabilities) the
    sampling policy is only named, never loaded, so its checkpoint need not be on disk."""
    run_dir = Path(run_dir)
    if stored_sampling and step > 1 and step - 1 not in list_checkpoints(run_dir):
        sampling = Policy(read_config(run_dir).model.name_or_path, None, f"the policy after step {step - 1}")
    elif step == 1:
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
    """One completion of rollouts.jsonl with its prompt, advantage and truncation flag, and its group's
    completions (the entropy threshold is taken over them)."""
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
    truncated = chosen.get("truncated", [False] * len(chosen["completions"]))
    return {
        "prompt_text": chosen["prompt_text"],
        "completion": chosen["completions"][sample],
        "advantage": float(chosen["advantages"][sample]),
        "truncated": bool(truncated[sample]),
        "group": [{"prompt_text": chosen["prompt_text"], "completion": completion, "truncated": bool(cut)}
                  for completion, cut in zip(chosen["completions"], truncated)],
        # As sampled (newer runs): the tokens, and their log-probabilities and entropies then.
        "completion_ids": chosen["completion_ids"][sample] if "completion_ids" in chosen else None,
        "logp": chosen["logp"][sample] if "logp" in chosen else None,
        "entropy": chosen["entropy"][sample] if "entropy" in chosen else None,
        # An episode's tokens include the environment's messages (model_mask 0), which no loss term sees.
        "model_mask": chosen["model_mask"][sample] if "model_mask" in chosen else None,
        "group_entropy": [value for index, row in enumerate(chosen.get("entropy", [])) for position, value in
                          enumerate(row) if "model_mask" not in chosen or chosen["model_mask"][index][position]],
    }


def encode(tokenizer, model, prompt_text: str, completion: str, truncated: bool,
           completion_ids: list[int] | None = None) -> Rollout:
    """The stored completion as a one-completion rollout: its tokens as sampled when stored, else
    its text re-encoded (a completion that ended by itself ends in EOS, one of the loss's tokens)."""
    device = next(model.parameters()).device
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)
    if completion_ids is None:
        completion_ids = tokenizer(completion, add_special_tokens=False).input_ids
        if not truncated:
            completion_ids.append(eos_token_ids(model, tokenizer)[0])
    if not completion_ids:
        raise InspectError("the completion is empty: there are no tokens to inspect")
    completion_tensor = torch.tensor([completion_ids], device=device)
    return Rollout(prompt_ids, torch.ones_like(prompt_ids), 1, completion_tensor,
                   torch.ones_like(completion_tensor, dtype=torch.float), [completion], torch.tensor([truncated]), 0.0)


@torch.no_grad()
def token_logprobs_under(cache: PolicyCache, policy: Policy, stored: dict, temperature: float,
                         with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, list[str]]:
    """log p of each token of the stored completion under `policy`, its entropy when asked, and the tokens."""
    model, tokenizer = cache.load(policy)
    rollout = encode(tokenizer, model, stored["prompt_text"], stored["completion"], stored["truncated"],
                     stored.get("completion_ids"))
    logp, entropy = completion_logprobs(model, rollout, temperature, with_entropy=with_entropy)
    pieces = [tokenizer.decode([token_id]) for token_id in rollout.completion_ids[0].tolist()]
    return logp[0].float().cpu(), None if entropy is None else entropy[0].float().cpu(), pieces


def entropy_threshold(cache: PolicyCache, policy: Policy, stored: dict, temperature: float, quantile: float) -> float:
    """The entropy above which a token of the group stays in the policy loss (rft.grpo.loss.high_entropy_mask
    over every token of the group's completions)."""
    entropies = [token_logprobs_under(cache, policy, member, temperature, with_entropy=True)[1]
                 for member in stored["group"]]
    return float(torch.quantile(torch.cat(entropies), 1 - quantile))


def loss_per_token(grpo: GRPOConfig, logp_updated: torch.Tensor, logp_sampled: torch.Tensor, logp_ref: torch.Tensor,
                   advantage: float, trained: torch.Tensor, model_written: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The run's loss on one completion ([T] tensors), token by token: the ratio it uses, the clipping
    flags, SAPO's gate, the contribution and its gradient with respect to each log p_updated.
    `model_written` (an episode's): 1 on the model's tokens; the environment's are in no loss term."""
    eps_high = grpo.epsilon_high if grpo.epsilon_high is not None else grpo.epsilon_low
    logp = logp_updated[None].clone().requires_grad_()
    mask = torch.ones_like(logp) if model_written is None else model_written[None].float()
    advantages = torch.tensor([advantage])
    ratio = torch.exp(grpo_loss.log_importance_weights(logp, logp_sampled[None], mask, grpo.importance_sampling_level))
    objective, clipped_low, clipped_high = grpo_loss.policy_objective(
        grpo.loss_type, ratio, logp, advantages, grpo.epsilon_low, eps_high, grpo.delta,
        grpo.sapo_temperature_pos, grpo.sapo_temperature_neg)
    kl_at_updated = grpo_loss.k3_kl(logp, logp_ref[None])
    if grpo.use_bias_correction_kl:
        kl_at_updated = grpo_loss.bias_corrected_kl(kl_at_updated, ratio)
    (-grpo_loss.per_token_loss(objective, kl_at_updated, grpo.beta, trained[None]) * mask).sum().backward()
    gate = torch.full_like(logp_updated, float("nan"))
    if grpo.loss_type == "sapo":
        tau = grpo_loss.sapo_temperatures(advantages, grpo.sapo_temperature_pos, grpo.sapo_temperature_neg)
        gate = grpo_loss.sapo_gate(ratio.detach(), tau).expand_as(logp)[0]
    # The KL the loss at step N penalised is the sampling policy's.
    kl = grpo_loss.k3_kl(logp_sampled[None], logp_ref[None])
    contribution = -grpo_loss.per_token_loss(objective.detach(), kl, grpo.beta, trained[None]) * mask
    return {"loss_ratio": ratio.detach().expand_as(logp)[0], "clipped_low": clipped_low.expand_as(logp)[0],
            "clipped_high": clipped_high.expand_as(logp)[0], "gate": gate, "kl": kl[0],
            "contribution": contribution[0], "push": logp.grad[0]}


def inspect_completion(cache: PolicyCache, run_dir: str | Path, step: int, group: int, sample: int) -> TokenReport:
    run_dir = Path(run_dir)
    config = read_config(run_dir)
    grpo = config.grpo
    stored = stored_completion(run_dir, step, group, sample)
    stored_sampling = stored["logp"] is not None and stored["entropy"] is not None
    policies = policies_for_step(run_dir, step, stored_sampling)
    temperature = config.sampling.temperature
    if stored_sampling:
        logp_sampled, entropy = torch.tensor(stored["logp"]), torch.tensor(stored["entropy"])
        _, tokenizer = cache.load(policies.reference)
        pieces = [tokenizer.decode([token_id]) for token_id in stored["completion_ids"]]
        notes = [f"Sampled by {policies.sampling.label} (its log-probabilities as stored with the rollouts); "
                 f"KL reference: {policies.reference.label}.", "The tokens are those sampled."]
    else:
        logp_sampled, entropy, pieces = token_logprobs_under(cache, policies.sampling, stored, temperature,
                                                             with_entropy=True)
        notes = [f"Sampled by {policies.sampling.label}; KL reference: {policies.reference.label}.",
                 "Tokens are re-encoded from the stored text; a few may split differently from how they were sampled."]
    if policies.updated is not None:
        logp_updated, _, _ = token_logprobs_under(cache, policies.updated, stored, temperature)
        notes.insert(1, f"Updated policy: {policies.updated.label} (after step {step}'s update).")
    else:
        logp_updated = logp_sampled
        notes.insert(1, f"No checkpoint of step {step} on disk: the ratio is 1, as the loss saw it with one pass per batch.")
    if policies.reference == policies.sampling:
        logp_ref = logp_sampled
    else:
        logp_ref, _, _ = token_logprobs_under(cache, policies.reference, stored, temperature)
    notes.extend(variant_notes(grpo))

    model_written = None if stored["model_mask"] is None else torch.tensor(stored["model_mask"], dtype=torch.float)
    trained = torch.ones_like(logp_sampled) if model_written is None else model_written.clone()
    if model_written is not None:
        notes.append(f"An episode: {int(model_written.sum())} of its {len(model_written)} tokens are the model's; "
                     "the environment's (greyed) are context only, in no term of the loss.")
    if grpo.top_entropy_quantile < 1.0:
        threshold = float(torch.quantile(torch.tensor(stored["group_entropy"]), 1 - grpo.top_entropy_quantile)) \
            if stored_sampling else entropy_threshold(cache, policies.sampling, stored, temperature,
                                                      grpo.top_entropy_quantile)
        trained = trained * (entropy >= threshold).float()
        notes.append(f"top_entropy_quantile {grpo.top_entropy_quantile:g}: tokens with entropy below {threshold:.3f} "
                     f"(the group's {1 - grpo.top_entropy_quantile:.0%} quantile) are left out of the policy term; "
                     f"{int(trained.sum())} of {len(trained)} here are trained.")
    per_token = loss_per_token(grpo, logp_updated, logp_sampled, logp_ref, stored["advantage"], trained, model_written)

    tokens = pd.DataFrame({
        "position": range(len(pieces)),
        "token": pieces,
        "p_sampled": logp_sampled.exp().numpy(),
        "p_updated": logp_updated.exp().numpy(),
        "p_ref": logp_ref.exp().numpy(),
        "ratio": (logp_updated - logp_sampled).exp().numpy(),
        "loss_ratio": per_token["loss_ratio"].numpy(),
        "clipped": ["low" if low else "high" if high else ""
                    for low, high in zip(per_token["clipped_low"].tolist(), per_token["clipped_high"].tolist())],
        "gate": per_token["gate"].numpy(),
        "entropy": entropy.numpy(),
        "trained": trained.bool().numpy(),
        "environment": (torch.zeros_like(trained) if model_written is None else 1 - model_written).bool().numpy(),
        "kl": per_token["kl"].numpy(),
        "contribution": per_token["contribution"].numpy(),
        "push": per_token["push"].numpy(),
    })
    return TokenReport(step, stored["completion"], stored["advantage"], tokens, notes)


def variant_notes(grpo: GRPOConfig) -> list[str]:
    """What the run's loss does differently from plain token-level GRPO, in words."""
    notes = [f"Loss: {grpo.loss_type}."]
    if grpo.importance_sampling_level == "sequence":
        notes.append("Sequence-level ratio (GSPO): every token uses the completion's one ratio, exp(mean log ratio).")
    if grpo.loss_type == "cispo":
        notes.append("cispo: the objective is min(ratio, epsilon_high) A log p with the weight stopped; 'clipped high' "
                     "marks a capped weight, whose token still learns.")
    if grpo.loss_type == "sapo":
        notes.append("sapo: no hard clipping; 'gate' is the share of the unclipped gradient its soft gate keeps.")
    if grpo.delta is not None:
        notes.append(f"Two-sided clipping: the unclipped ratio is capped at delta = {grpo.delta:g}.")
    return notes
