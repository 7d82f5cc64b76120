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
    logp_old = torch.zeros(2, 3)
    ratios = torch.tensor([[1.5, 1.0, 0.5], [1.5, 1.0, 0.5]])
    logp = torch.log(ratios)
    advantages = torch.tensor([1.0, -1.0])
    objective, low, high = loss.clipped_surrogate(logp, logp_old, advantages, eps, eps)
    # A > 0: min(rho A, clip(rho) A): 1.5 -> 1.2 (clipped high), 1.0 -> 1.0, 0.5 -> 0.5 (unclipped side)
    # A < 0: 1.5 -> -1.5 (min picks the unclipped), 1.0 -> -1.0, 0.5 -> -0.8 (clipped low)
    assert objective.tolist() == [pytest.approx([1.2, 1.0, 0.5]), pytest.approx([-1.5, -1.0, -0.8])]
    assert high.tolist() == [[True, False, False], [False, False, False]]
    assert low.tolist() == [[False, False, False], [False, False, True]]


def test_clipped_surrogate_asymmetric_dapo_epsilon():
    logp = torch.log(torch.tensor([[1.25]]))
    objective, _, high = loss.clipped_surrogate(logp, torch.zeros(1, 1), torch.tensor([2.0]), 0.2, 0.28)
    assert objective.item() == pytest.approx(2.5)  # 1.25 < 1.28: not clipped
    assert not high.item()


def test_clipped_surrogate_gradient_flows_at_ratio_one():
    logp = torch.zeros(1, 2, requires_grad=True)
    objective, _, _ = loss.clipped_surrogate(logp, logp.detach(), torch.tensor([3.0]), 0.2, 0.2)
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
    logp_old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[2.0, 0.5]]))  # rho = [2, 0.5]
    assert loss.bias_corrected_kl(kl, logp, logp_old).tolist() == [pytest.approx([1.0, 0.5])]


def test_bias_corrected_kl_adds_kl_times_dlogp_to_the_gradient_at_ratio_one():
    # pi = [0.5, 0.25], pi_ref = [0.5, 0.5]: k3 = [0, 1 - ln 2]; d k3 / d logp = 1 - pi_ref / pi = [0, -1]
    logp_ref = torch.log(torch.tensor([0.5, 0.5]))
    plain_logp = torch.log(torch.tensor([0.5, 0.25])).requires_grad_()
    loss.k3_kl(plain_logp, logp_ref).sum().backward()
    assert plain_logp.grad.tolist() == pytest.approx([0.0, -1.0])

    logp = torch.log(torch.tensor([0.5, 0.25])).requires_grad_()
    kl = loss.k3_kl(logp, logp_ref)
    corrected = loss.bias_corrected_kl(kl, logp, logp.detach())  # one pass per batch: rho = 1 in value
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
