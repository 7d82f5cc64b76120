"""The GRPO objective as pure tensor functions, next to the equations they compute.

Shapes: B completions (P prompts x G generations, grouped contiguously), T completion tokens.
`mask` is 1.0 on completion tokens that count (not prompt, not padding after EOS).
Equations: shared/specs/grpo.md (DeepSeekMath GRPO; DAPO; Dr. GRPO; and the variants with TRL 1.16's
names: GSPO's sequence-level ratio, CISPO, SAPO, two-sided clipping, entropy masking and bonus,
GDPO's per-function normalisation).
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


def group_normalised_rewards(per_function: torch.Tensor, weights: torch.Tensor, group_size: int) -> torch.Tensor:
    """s_i = sum_k w_k (r_ik - mean_group(r_k)) / (std_group(r_k) + 1e-4): each function normalised
    within its group before the weighted sum (GDPO; TRL's multi_objective_aggregation
    "normalize_then_sum"), so a function with a wide range cannot drown the others.

    Means and stds skip missing scores (NaN); a missing score, or a function with fewer than two
    scores in the group (no spread to measure), contributes 0. A completion no function could
    score gets NaN, as in total_rewards. [B, K], [K] -> [B].
    """
    grouped = per_function.view(-1, group_size, per_function.shape[-1])
    centred = grouped - torch.nanmean(grouped, dim=1, keepdim=True)
    normalised = (centred / (nan_std(grouped, dim=1, keepdim=True) + ADVANTAGE_EPS)).reshape(per_function.shape)
    total = (torch.nan_to_num(normalised, nan=0.0) * weights).sum(-1)
    return total.masked_fill(torch.isnan(per_function).all(-1), float("nan"))


def step_advantages(
    scores: torch.Tensor, group_size: int, step_mean: float, step_std: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """A_i = (s_i - mean) / (std + 1e-4) with the mean and std of the whole optimisation step's scores:
    the last stage of normalize_then_sum, where each s_i is already group-relative
    (group_normalised_rewards), so TRL centres and scales over the step, whatever scale_rewards says.

    An unscorable completion (s_i NaN) gets A = 0. Also returns which groups' scores have no
    spread (fewer than two scored, or all equal), for frac_reward_zero_std.
    scores: [B] -> (advantages [B], zero_std_groups [B // group_size] bool).
    """
    advantages = torch.nan_to_num((scores - step_mean) / (step_std + ADVANTAGE_EPS), nan=0.0)
    zero_std = ~(nan_std(scores.view(-1, group_size), dim=1) >= 1e-6)
    return advantages, zero_std


def log_importance_weights(logp: torch.Tensor, logp_old: torch.Tensor, mask: torch.Tensor, level: str) -> torch.Tensor:
    """log rho: w_t = logp_t - logp_old_t per token ("token", [B, T]), or its masked mean over each
    completion, w_i = sum_t m_t w_t / max(sum_t m_t, 1) ("sequence", GSPO, [B, 1]: one
    length-normalised ratio per sequence, broadcast to its tokens)."""
    log_ratio = logp - logp_old
    if level == "token":
        return log_ratio
    if level == "sequence":
        return ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0))[:, None]
    raise ValueError(f"unknown importance_sampling_level {level!r}")


def clipped_surrogate(
    ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float, eps_high: float, delta: float | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """L_clip = min(min(rho, delta) A, clip(rho, 1 - eps_low, 1 + eps_high) A).

    rho: [B, T] per token, or [B, 1] per sequence. delta (two-sided clipping, INTELLECT-2; None:
    off) caps the unclipped ratio too: with A < 0 the min picks rho A, which is otherwise unbounded
    below as rho grows. Returns (objective, clipped_low, clipped_high), shaped like rho A: a token is clipped
    low when rho < 1 - eps_low with A < 0, high when rho > 1 + eps_high with A > 0 (where the min
    picks the clipped term and the gradient stops).
    """
    adv = advantages[:, None]
    capped = ratio if delta is None else torch.clamp(ratio, max=delta)
    objective = torch.min(capped * adv, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * adv)
    clipped_low = (ratio < 1 - eps_low) & (adv < 0)
    clipped_high = (ratio > 1 + eps_high) & (adv > 0)
    return objective, clipped_low, clipped_high


def cispo_objective(
    ratio: torch.Tensor, logp: torch.Tensor, advantages: torch.Tensor, eps_high: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """L_cispo = sg(min(rho, eps_high)) A logp (MiniMax-M1): the ratio is capped at eps_high itself (not
    1 + eps_high; ScaleRL uses 5) and only weights the token; the gradient flows through logp, so
    no token's gradient is ever dropped, only scaled down.

    Returns (objective [B, T], capped [B, T]: rho > eps_high with A > 0, TRL's cispo clip count).
    """
    adv = advantages[:, None]
    weight = torch.clamp(ratio, max=eps_high).detach()
    return weight * adv * logp, (ratio > eps_high) & (adv > 0)


def sapo_temperatures(advantages: torch.Tensor, positive: float, negative: float) -> torch.Tensor:
    """tau per sequence: `positive` where A > 0, else `negative`. [B] -> [B, 1]."""
    return torch.where(advantages[:, None] > 0, positive, negative)


def sapo_objective(ratio: torch.Tensor, advantages: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """L_sapo = (4 / tau) sigmoid(tau (rho - 1)) A (Soft Adaptive Policy Optimization): a smooth gate in
    place of the hard clip. Its slope in rho is sapo_gate (1 at rho = 1), so on-policy tokens learn
    as in GRPO and the gradient fades, rather than stops, as rho leaves 1. tau: [B, 1]."""
    return 4 * torch.sigmoid(tau * (ratio - 1)) / tau * advantages[:, None]


def sapo_gate(ratio: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """d L_sapo / d(rho A) = 4 s (1 - s), s = sigmoid(tau (rho - 1)): how much of the unclipped
    gradient SAPO keeps for a token (1 at rho = 1, towards 0 far from it)."""
    s = torch.sigmoid(tau * (ratio - 1))
    return 4 * s * (1 - s)


def policy_objective(
    loss_type: str,
    ratio: torch.Tensor,
    logp: torch.Tensor,
    advantages: torch.Tensor,
    eps_low: float,
    eps_high: float,
    delta: float | None = None,
    sapo_temperature_pos: float = 1.0,
    sapo_temperature_neg: float = 1.05,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-token objective of `loss_type` (to maximise), with (clipped_low, clipped_high) flags:
    cispo_objective for cispo, sapo_objective for sapo (it never clips: both flags False),
    clipped_surrogate for grpo, bnpo, dr_grpo and dapo (which differ only in aggregate_loss)."""
    if loss_type == "cispo":
        objective, capped = cispo_objective(ratio, logp, advantages, eps_high)
        return objective, torch.zeros_like(capped), capped
    if loss_type == "sapo":
        tau = sapo_temperatures(advantages, sapo_temperature_pos, sapo_temperature_neg)
        objective = sapo_objective(ratio, advantages, tau)
        unclipped = torch.zeros(objective.shape, dtype=torch.bool, device=objective.device)
        return objective, unclipped, unclipped
    return clipped_surrogate(ratio, advantages, eps_low, eps_high, delta)


def high_entropy_mask(entropy: torch.Tensor, mask: torch.Tensor, quantile: float) -> torch.Tensor:
    """1 on the active tokens whose entropy H_t >= the (1 - quantile) quantile of the active tokens'
    entropies, else 0 ("Beyond the 80/20 rule": the forking tokens where the policy is unsure carry
    the learning signal). quantile 0.2 keeps the top 20%; 0 keeps only the highest. [B, T] -> [B, T]."""
    active = entropy[mask.bool()].float()
    if active.numel() == 0:
        return torch.zeros_like(mask)
    threshold = torch.quantile(active, 1 - quantile)
    return ((entropy >= threshold) & mask.bool()).to(mask.dtype)


def mean_entropy(entropy: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """H = sum_t m_t H_t / max(sum_t m_t, 1), differentiable: the entropy bonus is
    L = L_policy - entropy_coef * H over the tokens the policy loss acts on, the same mean whatever
    the loss_type."""
    return (entropy * mask).sum() / mask.sum().clamp(min=1.0)


def k3_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """KL(pi || pi_ref) per token by the k3 estimator: exp(d) - d - 1, d = logp_ref - logp (>= 0)."""
    delta = logp_ref - logp
    return torch.exp(delta) - delta - 1


def bias_corrected_kl(kl: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """rho * kl per token (TRL's use_bias_correction_kl, DeepSeek-V3.2); rho is the importance ratio
    of the loss: per token, or GSPO's per sequence (the unbiased property holds per token).

    The tokens were sampled from the old policy, so the k3 term needs the importance ratio for its
    gradient to be the unbiased gradient of KL(pi || pi_ref). rho is 1 in value when there is one
    pass per batch, but d rho = rho d logp still flows, adding kl * d logp to the k3 gradient:
    d(rho k3) = (1 - pi_ref / pi + k3) d logp = (logp - logp_ref) d logp at rho = 1.
    """
    return kl * ratio


def per_token_loss(
    objective: torch.Tensor, kl: torch.Tensor | None, beta: float, entropy_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """l_t = -e_t L_t + beta * kl_t: maximise the objective, stay near the reference. e_t
    (high_entropy_mask; None: 1) drops low-entropy tokens from the policy term only, as TRL does:
    the KL still holds every token near the reference."""
    policy = objective if entropy_mask is None else objective * entropy_mask
    if kl is None or beta == 0:
        return -policy
    return -policy + beta * kl


def aggregate_loss(
    token_loss: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    max_completion_length: int,
    global_active_tokens: float | None = None,
) -> torch.Tensor:
    """Reduce per-token losses to one scalar, per loss_type:

    grpo, sapo:    mean over each sequence's tokens, then mean over sequences (length-biased)
    bnpo:          sum over all tokens / active tokens in this batch
    dr_grpo:       sum over all tokens / (B * max_completion_length)
    dapo, cispo:   sum over all tokens / active tokens in the whole accumulated batch
                   (`global_active_tokens`; defaults to this batch's count)
    """
    masked = token_loss * mask
    if loss_type in ("grpo", "sapo"):
        per_sequence = masked.sum(-1) / mask.sum(-1).clamp(min=1.0)
        return per_sequence.mean()
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return masked.sum() / (token_loss.shape[0] * max_completion_length)
    if loss_type in ("dapo", "cispo"):
        denominator = global_active_tokens if global_active_tokens is not None else mask.sum().item()
        return masked.sum() / max(float(denominator), 1.0)
    raise ValueError(f"unknown loss_type {loss_type!r}")


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean over active tokens, for logging."""
    return float((values * mask).sum() / mask.sum().clamp(min=1.0))
