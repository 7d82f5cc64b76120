"""The GRPO math against values worked out by hand."""

import math

import pytest
import torch

from rft.grpo import loss


def test_token_logprobs_matches_log_softmax_and_chunks(monkeypatch):
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11)
    tokens = torch.randint(0, 11, (3, 5))
    expected = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    monkeypatch.setattr(loss, "LOGSUMEXP_CHUNK_ROWS", 4)  # forces 4 chunks over 15 rows
    assert torch.allclose(loss.token_logprobs(logits, tokens), expected, atol=1e-6)


def test_token_logprobs_hand_value():
    # logits [0, ln 3] -> p = [1/4, 3/4]
    logits = torch.tensor([[[0.0, math.log(3.0)]]])
    assert loss.token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))


def test_token_entropy_uniform_and_peaked():
    uniform = torch.zeros(1, 1, 4)
    assert loss.token_entropy(uniform).item() == pytest.approx(math.log(4))
    peaked = torch.tensor([[[100.0, 0.0, 0.0]]])
    assert loss.token_entropy(peaked).item() == pytest.approx(0.0, abs=1e-6)


def test_total_rewards_weights_and_missing():
    per_function = torch.tensor([[1.0, float("nan")], [0.5, 2.0]])
    weights = torch.tensor([2.0, 0.5])
    assert loss.total_rewards(per_function, weights).tolist() == [2.0, 2.0]


def test_group_advantages_by_hand():
    # group 1: [1, 3] mean 2, std (unbiased) sqrt(2); group 2: [5, 5] zero spread
    rewards = torch.tensor([1.0, 3.0, 5.0, 5.0])
    advantages, zero_std = loss.group_advantages(rewards, group_size=2)
    s = math.sqrt(2.0) + 1e-4
    assert advantages.tolist() == pytest.approx([-1 / s, 1 / s, 0.0, 0.0])
    assert zero_std.tolist() == [False, True]


def test_group_advantages_batch_and_none_scaling():
    rewards = torch.tensor([0.0, 2.0, 4.0, 4.0])
    batch_std = rewards.std().item()  # sqrt(11/3)
    advantages, _ = loss.group_advantages(rewards, 2, scale="batch")
    assert advantages.tolist() == pytest.approx([-1 / (batch_std + 1e-4), 1 / (batch_std + 1e-4), 0.0, 0.0])
    advantages, _ = loss.group_advantages(rewards, 2, scale="none")
    assert advantages.tolist() == pytest.approx([-1.0, 1.0, 0.0, 0.0])


def test_batch_scaling_divides_by_the_given_step_std():
    # The step's other micro-batches widen the std: this one's own would be sqrt(2).
    advantages, _ = loss.group_advantages(torch.tensor([1.0, 3.0]), 2, scale="batch", batch_std=4.0)
    assert advantages.tolist() == pytest.approx([-1 / (4 + 1e-4), 1 / (4 + 1e-4)])


def test_std_from_sums_by_hand():
    # [1, 2, 3, 4]: n 4, sum 10, sum of squares 30 -> variance (30 - 100 / 4) / 3 = 5 / 3
    assert loss.std_from_sums(4, 10.0, 30.0) == pytest.approx(math.sqrt(5 / 3))
    # the same values in two parts, [1, 2] and [3, 4], whose sums add up
    assert loss.std_from_sums(2 + 2, 3.0 + 7.0, 5.0 + 25.0) == pytest.approx(torch.tensor([1.0, 2, 3, 4]).std().item())
    equal = [0.7] * 8  # their sums give a variance of -2.5e-16 by rounding, whose sqrt would be NaN
    assert loss.std_from_sums(len(equal), sum(equal), sum(v * v for v in equal)) == 0.0
    assert math.isnan(loss.std_from_sums(1, 5.0, 25.0))


def test_a_completion_no_function_could_score_has_no_total():
    nan = float("nan")
    per_function = torch.tensor([[nan, nan], [nan, 1.0]])
    total = loss.total_rewards(per_function, torch.tensor([1.0, 2.0]))
    assert math.isnan(total[0]) and total[1].item() == 2.0


def test_nan_std_by_hand():
    nan = float("nan")
    assert loss.nan_std(torch.tensor([1.0, nan, 3.0])).item() == pytest.approx(math.sqrt(2.0))  # unbiased
    assert math.isnan(loss.nan_std(torch.tensor([nan, 4.0])))  # one value has no spread to measure
    rows = loss.nan_std(torch.tensor([[0.0, 2.0, 4.0], [nan, nan, nan]]), dim=1, keepdim=True)
    assert rows.shape == (2, 1) and rows[0].item() == pytest.approx(2.0) and math.isnan(rows[1])


def test_unscorable_completion_is_left_out_of_its_group():
    # TRL's case: [NaN, 1, 2, 3] -> the group is [1, 2, 3]: mean 2, std 1; the unscorable one gets 0.
    # (Scoring it 0 instead gave [-1.16, -0.39, 0.39, 1.16].)
    advantages, zero_std = loss.group_advantages(torch.tensor([float("nan"), 1.0, 2.0, 3.0]), group_size=4)
    s = 1.0 + 1e-4
    assert advantages.tolist() == pytest.approx([0.0, -1 / s, 0.0, 1 / s])
    assert zero_std.tolist() == [False]


def test_a_group_with_one_scorable_or_equal_scorable_completions_has_zero_spread():
    nan = float("nan")
    rewards = torch.tensor([nan, 5.0, nan, nan,  # one scored
                            nan, 2.0, 2.0, nan,  # scored ones equal
                            nan, nan, nan, nan,  # none scored
                            0.0, 2.0, nan, 4.0])  # mean 2, std 2
    for scale in ("group", "batch", "none"):
        advantages, zero_std = loss.group_advantages(rewards, 4, scale=scale)
        assert zero_std.tolist() == [True, True, True, False], scale
        assert not torch.isnan(advantages).any(), scale
        assert advantages[:12].tolist() == [0.0] * 12 and advantages[14].item() == 0.0, scale
    advantages, _ = loss.group_advantages(rewards, 4, scale="group")
    assert advantages[12:].tolist() == pytest.approx([-2 / (2 + 1e-4), 0.0, 0.0, 2 / (2 + 1e-4)])
    advantages, _ = loss.group_advantages(rewards, 4, scale="batch")
    batch_std = torch.tensor([5.0, 2.0, 2.0, 0.0, 2.0, 4.0]).std().item()  # the six scored rewards
    assert advantages[12:].tolist() == pytest.approx([-2 / (batch_std + 1e-4), 0.0, 0.0, 2 / (batch_std + 1e-4)])


def test_clipped_surrogate_both_sides():
    eps = 0.2
    ratios = torch.tensor([[1.5, 1.0, 0.5], [1.5, 1.0, 0.5]])
    advantages = torch.tensor([1.0, -1.0])
    objective, low, high = loss.clipped_surrogate(ratios, advantages, eps, eps)
    # A > 0: min(rho A, clip(rho) A): 1.5 -> 1.2 (clipped high), 1.0 -> 1.0, 0.5 -> 0.5 (unclipped side)
    # A < 0: 1.5 -> -1.5 (min picks the unclipped), 1.0 -> -1.0, 0.5 -> -0.8 (clipped low)
    assert objective.tolist() == [pytest.approx([1.2, 1.0, 0.5]), pytest.approx([-1.5, -1.0, -0.8])]
    assert high.tolist() == [[True, False, False], [False, False, False]]
    assert low.tolist() == [[False, False, False], [False, False, True]]


def test_clipped_surrogate_asymmetric_dapo_epsilon():
    objective, _, high = loss.clipped_surrogate(torch.tensor([[1.25]]), torch.tensor([2.0]), 0.2, 0.28)
    assert objective.item() == pytest.approx(2.5)  # 1.25 < 1.28: not clipped
    assert not high.item()


def test_clipped_surrogate_gradient_flows_at_ratio_one():
    logp = torch.zeros(1, 2, requires_grad=True)
    objective, _, _ = loss.clipped_surrogate(torch.exp(logp - logp.detach()), torch.tensor([3.0]), 0.2, 0.2)
    objective.sum().backward()
    assert logp.grad.tolist() == [[3.0, 3.0]]  # d(rho A)/d logp = rho A = A at rho = 1


def test_k3_kl_by_hand():
    logp = torch.tensor([math.log(0.5), math.log(0.25)])
    logp_ref = torch.tensor([math.log(0.5), math.log(0.5)])
    # d = ln 2: e^d - d - 1 = 2 - ln 2 - 1
    assert loss.k3_kl(logp, logp_ref).tolist() == pytest.approx([0.0, 1 - math.log(2)])
    assert (loss.k3_kl(torch.randn(100), torch.randn(100)) >= 0).all()


def test_bias_corrected_kl_by_hand():
    kl = torch.tensor([[0.5, 1.0]])
    assert loss.bias_corrected_kl(kl, torch.tensor([[2.0, 0.5]])).tolist() == [pytest.approx([1.0, 0.5])]
    # GSPO: one ratio per sequence, broadcast over its tokens
    assert loss.bias_corrected_kl(kl, torch.tensor([[3.0]])).tolist() == [pytest.approx([1.5, 3.0])]


def test_bias_corrected_kl_adds_kl_times_dlogp_to_the_gradient_at_ratio_one():
    # pi = [0.5, 0.25], pi_ref = [0.5, 0.5]: k3 = [0, 1 - ln 2]; d k3 / d logp = 1 - pi_ref / pi = [0, -1]
    logp_ref = torch.log(torch.tensor([0.5, 0.5]))
    plain_logp = torch.log(torch.tensor([0.5, 0.25])).requires_grad_()
    loss.k3_kl(plain_logp, logp_ref).sum().backward()
    assert plain_logp.grad.tolist() == pytest.approx([0.0, -1.0])

    logp = torch.log(torch.tensor([0.5, 0.25])).requires_grad_()
    kl = loss.k3_kl(logp, logp_ref)
    corrected = loss.bias_corrected_kl(kl, torch.exp(logp - logp.detach()))  # one pass per batch: rho = 1 in value
    assert corrected.tolist() == pytest.approx(kl.tolist())
    corrected.sum().backward()
    # plus k3 * d logp: [0, -1 + 1 - ln 2] = [0, -ln 2], which is logp - logp_ref
    assert logp.grad.tolist() == pytest.approx([0.0, -math.log(2)])
    assert logp.grad.tolist() == pytest.approx((plain_logp.grad + kl.detach()).tolist())


def test_per_token_loss_with_and_without_kl():
    objective = torch.tensor([1.0, -2.0])
    kl = torch.tensor([0.5, 1.0])
    assert loss.per_token_loss(objective, kl, beta=0.1).tolist() == pytest.approx([-0.95, 2.1])
    assert loss.per_token_loss(objective, None, beta=0.0).tolist() == [-1.0, 2.0]


# Two sequences: lengths 2 and 1 of max 4; losses [1, 3 | 6]
TOKEN_LOSS = torch.tensor([[1.0, 3.0, 9.0, 9.0], [6.0, 9.0, 9.0, 9.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]])


@pytest.mark.parametrize(
    "loss_type, global_tokens, expected",
    [
        ("grpo", None, (2.0 + 6.0) / 2),  # per-sequence means 2 and 6
        ("bnpo", None, 10.0 / 3),  # 10 over 3 active tokens
        ("dr_grpo", None, 10.0 / (2 * 4)),  # over B * max length
        ("dapo", 5.0, 10.0 / 5),  # over the whole accumulated batch's 5 tokens
        ("dapo", None, 10.0 / 3),
    ],
)
def test_aggregate_loss_types(loss_type, global_tokens, expected):
    result = loss.aggregate_loss(TOKEN_LOSS, MASK, loss_type, max_completion_length=4, global_active_tokens=global_tokens)
    assert result.item() == pytest.approx(expected)


def test_aggregate_loss_rejects_unknown_type():
    with pytest.raises(ValueError):
        loss.aggregate_loss(TOKEN_LOSS, MASK, "ppo", 4)


def test_masked_mean_ignores_padding():
    assert loss.masked_mean(TOKEN_LOSS, MASK) == pytest.approx(10.0 / 3)


# ---- the variants (shared/specs/grpo.md, "Variants"; TRL 1.16's names) ----------------------------


def test_log_importance_weights_token_and_sequence():
    logp = torch.tensor([[0.2, 0.4, 9.0], [0.3, 9.0, 9.0]])
    logp_old = torch.zeros(2, 3)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    assert torch.equal(loss.log_importance_weights(logp, logp_old, mask, "token"), logp)
    # GSPO: the masked mean per sequence, (0.2 + 0.4) / 2 and 0.3 / 1; padding (9.0) ignored
    sequence = loss.log_importance_weights(logp, logp_old, mask, "sequence")
    assert sequence.shape == (2, 1) and sequence.flatten().tolist() == pytest.approx([0.3, 0.3])
    no_tokens = loss.log_importance_weights(logp, logp_old, torch.zeros(2, 3), "sequence")
    assert no_tokens.flatten().tolist() == [0.0, 0.0]  # an empty completion is not 0 / 0
    with pytest.raises(ValueError):
        loss.log_importance_weights(logp, logp_old, mask, "episode")


def test_sequence_ratio_spreads_its_gradient_over_the_tokens():
    # rho = exp(mean_t w_t): d rho / d logp_t = rho / length, the same for every token of the sequence
    logp = torch.tensor([[0.1, 0.5, 0.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    ratio = torch.exp(loss.log_importance_weights(logp, torch.zeros(1, 3), mask, "sequence"))
    ratio.sum().backward()
    assert logp.grad.tolist() == [pytest.approx([math.exp(0.3) / 2, math.exp(0.3) / 2, 0.0])]


def test_two_sided_clipping_caps_the_unclipped_ratio():
    ratios = torch.tensor([[5.0, 2.0, 1.0]])
    negative = torch.tensor([-1.0])
    # without delta, A < 0: min(rho A, clip(rho) A) = rho A, unbounded as rho grows
    objective, _, _ = loss.clipped_surrogate(ratios, negative, 0.2, 0.2)
    assert objective.tolist() == [pytest.approx([-5.0, -2.0, -1.0])]
    objective, _, _ = loss.clipped_surrogate(ratios, negative, 0.2, 0.2, delta=3.0)
    assert objective.tolist() == [pytest.approx([-3.0, -2.0, -1.0])]
    # A > 0: the clip at 1 + eps_high acts first, delta changes nothing
    positive, _, high = loss.clipped_surrogate(ratios, torch.tensor([1.0]), 0.2, 0.2, delta=3.0)
    assert positive.tolist() == [pytest.approx([1.2, 1.2, 1.0])] and high.tolist() == [[True, True, False]]


def test_two_sided_clipping_stops_the_gradient_above_delta():
    logp = torch.log(torch.tensor([[5.0, 2.0]])).requires_grad_()
    objective, _, _ = loss.clipped_surrogate(torch.exp(logp), torch.tensor([-1.0]), 0.2, 0.2, delta=3.0)
    objective.sum().backward()
    assert logp.grad.tolist() == [pytest.approx([0.0, -2.0])]  # d(rho A)/d logp = rho A below the cap


def test_cispo_weights_by_the_capped_stopped_ratio():
    logp = torch.log(torch.tensor([[0.5, 1.0, 6.0], [0.5, 1.0, 6.0]])).requires_grad_()
    ratio = torch.exp(logp)  # logp_old = 0
    objective, capped = loss.cispo_objective(ratio, logp, torch.tensor([2.0, -1.0]), eps_high=5.0)
    weights = torch.tensor([[0.5, 1.0, 5.0]])  # min(rho, 5)
    assert torch.allclose(objective, weights * torch.tensor([[2.0], [-1.0]]) * logp.detach())
    assert capped.tolist() == [[False, False, True], [False, False, False]]  # counted where A > 0, as TRL
    objective.sum().backward()
    # the weight is a constant: d/d logp = weight * A, also for the capped token (its gradient is not dropped)
    assert logp.grad.tolist() == [pytest.approx([1.0, 2.0, 10.0]), pytest.approx([-0.5, -1.0, -5.0])]


def test_sapo_temperatures_by_the_sign_of_the_advantage():
    assert loss.sapo_temperatures(torch.tensor([1.0, 0.0, -2.0]), 1.0, 1.05).flatten().tolist() == pytest.approx(
        [1.0, 1.05, 1.05])


def test_sapo_objective_and_gate_by_hand():
    ratio = torch.tensor([[1.0, 2.0]])
    tau = torch.tensor([[1.0]])
    s = 1 / (1 + math.exp(-1.0))  # sigmoid(1 * (2 - 1))
    assert loss.sapo_objective(ratio, torch.tensor([3.0]), tau).tolist() == [pytest.approx([4 * 0.5 * 3, 4 * s * 3])]
    assert loss.sapo_gate(ratio, tau).tolist() == [pytest.approx([1.0, 4 * s * (1 - s)])]
    negative = loss.sapo_objective(torch.tensor([[1.0]]), torch.tensor([-1.0]), torch.tensor([[1.05]]))
    assert negative.item() == pytest.approx(-(4 / 1.05) * 0.5)


def test_sapo_gradient_is_the_gated_unclipped_one():
    logp = torch.log(torch.tensor([[1.0, 2.0]])).requires_grad_()
    ratio = torch.exp(logp)
    tau = torch.tensor([[1.0]])
    loss.sapo_objective(ratio, torch.tensor([3.0]), tau).sum().backward()
    # d/d logp = gate * rho * A: A at rho = 1, as unclipped GRPO
    gate = loss.sapo_gate(ratio.detach(), tau)
    assert logp.grad.tolist() == [pytest.approx([3.0, gate[0, 1].item() * 2 * 3])]


def test_policy_objective_dispatches_and_flags():
    ratio = torch.tensor([[0.5, 1.0, 6.0]])
    logp = torch.log(ratio)
    advantages = torch.tensor([1.0])
    clipped = loss.policy_objective("dapo", ratio, logp, advantages, 0.2, 0.28)
    assert clipped[0].tolist() == [pytest.approx([0.5, 1.0, 1.28])] and clipped[2].tolist() == [[False, False, True]]
    cispo, low, high = loss.policy_objective("cispo", ratio, logp, advantages, 0.2, 5.0)
    assert cispo.tolist() == [pytest.approx([0.5 * math.log(0.5), 0.0, 5.0 * math.log(6.0)])]
    assert low.tolist() == [[False, False, False]] and high.tolist() == [[False, False, True]]
    sapo, low, high = loss.policy_objective("sapo", ratio, logp, advantages, 0.2, 0.2)
    assert torch.allclose(sapo, loss.sapo_objective(ratio, advantages, torch.tensor([[1.0]])))
    assert not low.any() and not high.any()  # a soft gate clips nothing


def test_high_entropy_mask_keeps_the_top_quantile_of_active_tokens():
    entropy = torch.tensor([[0.1, 0.5, 0.9, 5.0], [0.3, 0.7, 5.0, 5.0]])  # 5.0: padding, never counted
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]])
    # active sorted [0.1, 0.3, 0.5, 0.7, 0.9]; q = 0.4: threshold = 0.6 quantile = 0.5 + 0.4 * 0.2 = 0.58
    assert loss.high_entropy_mask(entropy, mask, 0.4).tolist() == [[0, 0, 1, 0], [0, 1, 0, 0]]
    assert loss.high_entropy_mask(entropy, mask, 0.0).tolist() == [[0, 0, 1, 0], [0, 0, 0, 0]]  # the highest only
    assert loss.high_entropy_mask(entropy, mask, 1.0).tolist() == mask.tolist()
    assert loss.high_entropy_mask(entropy, torch.zeros(2, 4), 0.2).sum() == 0


def test_entropy_mask_drops_the_policy_term_but_keeps_the_kl():
    objective = torch.tensor([[1.0, -2.0]])
    kl = torch.tensor([[0.5, 1.0]])
    kept = torch.tensor([[1.0, 0.0]])
    assert loss.per_token_loss(objective, kl, 0.1, kept).tolist() == [pytest.approx([-0.95, 0.1])]
    assert loss.per_token_loss(objective, None, 0.0, kept).tolist() == [pytest.approx([-1.0, 0.0])]


def test_mean_entropy_is_a_differentiable_masked_mean():
    entropy = torch.tensor([[1.0, 3.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    bonus = loss.mean_entropy(entropy, mask)
    assert bonus.item() == pytest.approx(2.0)
    bonus.backward()
    assert entropy.grad.tolist() == [[0.5, 0.5, 0.0]]
    assert loss.mean_entropy(entropy, torch.zeros(1, 3)).item() == 0.0


@pytest.mark.parametrize("variant, like", [("cispo", "dapo"), ("sapo", "grpo")])
def test_new_loss_types_aggregate_like_their_family(variant, like):
    for global_tokens in (None, 5.0):
        ours = loss.aggregate_loss(TOKEN_LOSS, MASK, variant, 4, global_tokens)
        assert ours.item() == pytest.approx(loss.aggregate_loss(TOKEN_LOSS, MASK, like, 4, global_tokens).item())


def test_group_normalised_rewards_by_hand():
    nan = float("nan")
    # one group of 3, two functions with weights 1 and 3
    per_function = torch.tensor([[0.0, 10.0], [1.0, 10.0], [2.0, 40.0]])
    scores = loss.group_normalised_rewards(per_function, torch.tensor([1.0, 3.0]), 3)
    # f1: mean 1, std 1; f2: mean 20, std sqrt(300)
    s1, s2 = 1 + 1e-4, math.sqrt(300) + 1e-4
    assert scores.tolist() == pytest.approx([-1 / s1 - 3 * 10 / s2, -3 * 10 / s2, 1 / s1 + 3 * 20 / s2])
    # a missing score contributes 0; a function with one score in the group has no spread: 0;
    # a completion no function scored has no score
    per_function = torch.tensor([[0.0, nan], [2.0, 5.0], [nan, nan]])
    scores = loss.group_normalised_rewards(per_function, torch.tensor([1.0, 1.0]), 3)
    s = math.sqrt(2) + 1e-4
    assert scores[:2].tolist() == pytest.approx([-1 / s, 1 / s]) and math.isnan(scores[2])


def test_normalize_then_sum_lets_a_small_range_function_count():
    # f1 in [0, 1] and f2 in the hundreds disagree: summed raw, f2 decides alone
    per_function = torch.tensor([[1.0, 100.0], [0.0, 103.0]])
    raw = loss.total_rewards(per_function, torch.ones(2))
    assert raw[0] < raw[1]
    normalised = loss.group_normalised_rewards(per_function, torch.ones(2), 2)
    assert normalised.tolist() == pytest.approx([0.0, 0.0], abs=1e-3)  # now the two functions weigh the same


def test_step_advantages_by_hand():
    nan = float("nan")
    scores = torch.tensor([1.0, 3.0, 2.0, 2.0, nan, 5.0])
    advantages, zero_std = loss.step_advantages(scores, 2, step_mean=2.0, step_std=1.5)
    s = 1.5 + 1e-4
    assert advantages.tolist() == pytest.approx([-1 / s, 1 / s, 0.0, 0.0, 0.0, 3 / s])
    assert zero_std.tolist() == [False, True, True]  # equal scores; a single scored completion
