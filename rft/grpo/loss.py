"""The GRPO objective as pure tensor functions, next to the equations they compute.

Shapes: B completions (P prompts x G generations, grouped contiguously), T completion tokens.
`mask` is 1.0 on completion tokens that count (not prompt, not padding after EOS).
Equations: shared/specs/grpo.md (DeepSeekMath GRPO; DAPO; Dr. GRPO).
"""

from __future__ import annotations

import math

import torch

ADVANTAGE_EPS = 1e-4
LOGSUMEXP_CHUNK_ROWS = 1024  # rows of a [rows, vocab] block turned into log-probs at once


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log pi(token_t | prefix) for each position: logits[b, t, tokens[b, t]] - logsumexp(logits[b, t]).

    Works through the rows in chunks, so a full-vocabulary float32 log-softmax of the whole batch
    is never held in memory (with a 49k vocabulary that copy would dominate memory).
    logits: [B, T, V] (any float dtype), tokens: [B, T] -> [B, T] float32.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1])
    flat_tokens = tokens.reshape(-1)
    pieces = []
    for start in range(0, flat_logits.shape[0], LOGSUMEXP_CHUNK_ROWS):
        block = flat_logits[start : start + LOGSUMEXP_CHUNK_ROWS].float()
        picked = block.gather(-1, flat_tokens[start : start + LOGSUMEXP_CHUNK_ROWS, None]).squeeze(-1)
        pieces.append(picked - torch.logsumexp(block, dim=-1))
    return torch.cat(pieces).reshape(tokens.shape)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """H_t = -sum_v p_v log p_v per position, in chunks like token_logprobs. [B, T, V] -> [B, T]."""
    flat = logits.reshape(-1, logits.shape[-1])
    pieces = []
    for start in range(0, flat.shape[0], LOGSUMEXP_CHUNK_ROWS):
        log_p = torch.log_softmax(flat[start : start + LOGSUMEXP_CHUNK_ROWS].float(), dim=-1)
        pieces.append(-(log_p.exp() * log_p).sum(-1))
    return torch.cat(pieces).reshape(logits.shape[:-1])


def total_rewards(per_function: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """r_i = sum_k w_k r_ik, where a missing score (NaN) contributes 0. [B, K], [K] -> [B].

    A completion that no function could score (every r_ik missing) has no reward at all: its
    r_i is NaN, so that group_advantages leaves it out instead of taking it for a reward of 0.
    """
    total = (torch.nan_to_num(per_function, nan=0.0) * weights).sum(-1)
    return total.masked_fill(torch.isnan(per_function).all(-1), float("nan"))


def nan_std(values: torch.Tensor, dim: int = -1, keepdim: bool = False) -> torch.Tensor:
    """The unbiased std along `dim` of the values that are not NaN: sqrt(sum (x - mean)^2 / (n - 1)).

    NaN where fewer than two values are present (one value has no spread to measure).
    """
    present = ~torch.isnan(values)
    count = present.sum(dim=dim, keepdim=True)
    deviations = torch.where(present, values - torch.nanmean(values, dim=dim, keepdim=True), 0.0)
    variance = (deviations**2).sum(dim=dim, keepdim=True) / (count - 1)
    std = torch.where(count > 1, variance.sqrt(), float("nan"))
    return std if keepdim else std.squeeze(dim)


def std_from_sums(count: float, total: float, total_of_squares: float) -> float:
    """The unbiased std of n values from n, sum x and sum x^2: sqrt((sum x^2 - (sum x)^2 / n) / (n - 1)).

    Sums add up across micro-batches and processes where the values themselves would have to be
    gathered. NaN when n < 2, like nan_std.
    """
    if count < 2:
        return float("nan")
    variance = (total_of_squares - total * total / count) / (count - 1)
    return math.sqrt(max(variance, 0.0))  # rounding can leave a tiny negative where all values are equal


def group_advantages(
    rewards: torch.Tensor, group_size: int, scale: str = "group", batch_std: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A_i = (r_i - mean_group(r)) / (std + 1e-4), and which groups had zero spread.

    scale "group": std of the group; "batch": `batch_std`, the std of the whole optimisation step's
    rewards, which may span more than these (defaults to the std of `rewards`); "none": no
    division (Dr. GRPO). Unscorable completions (r_i NaN) are left out of the mean and the std and get
    A = 0. A group whose scorable rewards are all equal, or that has fewer than two, gets A = 0
    for every member: it carries no learning signal.
    rewards: [B] -> (advantages [B], zero_std_groups [B // group_size] bool).
    """
    grouped = rewards.view(-1, group_size)
    centred = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    group_std = nan_std(grouped, dim=1, keepdim=True)
    zero_std = ~(group_std.squeeze(1) >= 1e-6)  # a NaN std (fewer than two scored) is no spread either
    if scale == "group":
        advantages = centred / (group_std + ADVANTAGE_EPS)
    elif scale == "batch":
        std = batch_std if batch_std is not None else nan_std(rewards)
        advantages = centred / (std + ADVANTAGE_EPS)
    elif scale == "none":
        advantages = centred
    else:
        raise ValueError(f"unknown scale_rewards {scale!r}")
    no_signal = zero_std[:, None] | torch.isnan(grouped)
    advantages = torch.where(no_signal, torch.zeros_like(advantages), advantages)
    return advantages.reshape(-1), zero_std


def clipped_surrogate(
    logp: torch.Tensor, logp_old: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_clip = min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A), rho = exp(logp - logp_old).

    Returns (objective [B, T], clipped_low [B, T], clipped_high [B, T]): a token is clipped low
    when rho < 1 - eps_low with A < 0, high when rho > 1 + eps_high with A > 0 (where the min
    picks the clipped term and the gradient stops).
    """
    ratio = torch.exp(logp - logp_old)
    adv = advantages[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv
    objective = torch.min(unclipped, clipped)
    clipped_low = (ratio < 1 - eps_low) & (adv < 0)
    clipped_high = (ratio > 1 + eps_high) & (adv > 0)
    return objective, clipped_low, clipped_high


def k3_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) per token by the k3 estimator: exp(d) - d - 1, d = logp_ref - logp (>= 0)."""
    delta = logp_ref - logp
    return torch.exp(delta) - delta - 1


def bias_corrected_kl(kl: torch.Tensor, logp: torch.Tensor, logp_old: torch.Tensor) -> torch.Tensor:
    """rho * kl per token, rho = exp(logp - logp_old) (TRL's use_bias_correction_kl, DeepSeek-V3.2).

    The tokens were sampled from the old policy, so the k3 term needs the importance ratio for its
    gradient to be the unbiased gradient of KL(pi || pi_ref). rho is 1 in value when there is one
    pass per batch, but d rho = rho d logp still flows, adding kl * d logp to the k3 gradient:
    d(rho k3) = (1 - pi_ref / pi + k3) d logp = (logp - logp_ref) d logp at rho = 1.
    """
    return kl * torch.exp(logp - logp_old)


def per_token_loss(objective: torch.Tensor, kl: torch.Tensor | None, beta: float) -> torch.Tensor:
    """l_t = -(L_clip - beta * kl): maximise the surrogate, stay near the reference."""
    if kl is None or beta == 0:
        return -objective
    return -(objective - beta * kl)


def aggregate_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    max_completion_length: int,
    global_active_tokens: float | None = None,
) -> torch.Tensor:
    """Reduce per-token losses to one scalar, per loss_type:

    grpo:    mean over each sequence's tokens, then mean over sequences (length-biased)
    bnpo:    sum over all tokens / active tokens in this batch
    dr_grpo: sum over all tokens / (B * max_completion_length)
    dapo:    sum over all tokens / active tokens in the whole accumulated batch
             (`global_active_tokens`; defaults to this batch's count)
    """
    masked = token_loss * mask
    if loss_type == "grpo":
        per_sequence = masked.sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_sequence.mean()
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return masked.sum() / (token_loss.shape[0] * max_completion_length)
    if loss_type == "dapo":
        denominator = global_active_tokens if global_active_tokens is not None else mask.sum().item()
        return masked.sum() / max(float(denominator), 1.0)
    raise ValueError(f"unknown loss_type {loss_type!r}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over active tokens, for logging."""
    return float((values * mask).sum() / mask.sum().clamp(min=1.0))
