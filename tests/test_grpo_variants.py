"""The GRPO variants (TRL 1.16's names) in the trainer on the tiny model, and the configs they refuse.

The math of each variant is tested against hand values in test_grpo_loss.py and against TRL's own
_compute_loss in test_bench.py (bench/crosscheck_trl.py); these tests check that the trainer uses it.
"""

from __future__ import annotations

import math

import pytest
import torch

from rft.config import ConfigError, RunConfig
from rft.grpo import loss as grpo_loss
from rft.grpo import trainer as trainer_module
from rft.grpo.trainer import train
from rft.runs import read_metrics, read_rollouts, read_status
from test_trainer_e2e import prompts_file, tiny_config  # noqa: F401 (a fixture)

CONSTANT_REWARD = "def constant(prompt, completion, example):\n    return 1.0\n"


def spy(monkeypatch, name: str) -> list:
    """Record the arguments and result of every call of rft.grpo.loss.<name> (as the trainer calls it)."""
    calls = []
    real = getattr(grpo_loss, name)

    def recording(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append((args, result))
        return result

    monkeypatch.setattr(grpo_loss, name, recording)
    return calls


@pytest.mark.parametrize("settings", [
    ["grpo.loss_type=cispo", "grpo.epsilon_high=5", "grpo.num_iterations=2"],
    ["grpo.loss_type=sapo", "grpo.num_iterations=2"],
    ["grpo.importance_sampling_level=sequence", "grpo.num_iterations=2"],
    ["grpo.delta=2", "grpo.num_iterations=2"],
    ["grpo.top_entropy_quantile=0.2", "grpo.entropy_coef=0.01"],
], ids=["cispo", "sapo", "gspo", "delta", "entropy"])
def test_each_variant_trains_and_logs(tmp_path, tiny_model_dir, prompts_file, settings):
    config = tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=2", *settings])
    run_dir = train(config, tmp_path / "run", progress=False)
    assert read_status(run_dir)["state"] == "finished"
    metrics = read_metrics(run_dir)
    assert metrics["step"].tolist() == [1, 2]
    for key in ("loss", "kl", "entropy", "grad_norm", "clip_ratio/low", "clip_ratio/high"):
        assert metrics[key].notna().all() and all(math.isfinite(v) for v in metrics[key]), key
    if "grpo.loss_type=sapo" in settings:  # a soft gate clips nothing
        assert (metrics["clip_ratio/region"] == 0).all()


def test_sequence_level_gives_one_ratio_per_completion(tmp_path, tiny_model_dir, prompts_file, monkeypatch):
    calls = spy(monkeypatch, "policy_objective")
    config = tiny_config(tiny_model_dir, prompts_file, set=[
        "schedule.max_steps=1", "grpo.importance_sampling_level=sequence", "grpo.num_iterations=2"])
    train(config, tmp_path / "run", progress=False)
    ratios = [args[1] for args, _ in calls]
    assert len(ratios) == 2 and all(ratio.shape == (4, 1) for ratio in ratios)  # G = 4 completions, one ratio each
    assert torch.equal(ratios[0], torch.ones(4, 1))  # the first pass is on-policy
    assert not torch.allclose(ratios[1], torch.ones(4, 1))  # the second sees the updated policy


def test_entropy_mask_keeps_the_top_quantile_on_every_pass(tmp_path, tiny_model_dir, prompts_file, monkeypatch):
    calls = spy(monkeypatch, "high_entropy_mask")
    config = tiny_config(tiny_model_dir, prompts_file, set=[
        "schedule.max_steps=1", "grpo.top_entropy_quantile=0.25", "grpo.num_iterations=2"])
    train(config, tmp_path / "run", progress=False)
    assert len(calls) == 2
    for (entropy, mask, quantile), kept in calls:
        assert quantile == 0.25 and not entropy.requires_grad
        active = int(mask.sum())
        assert 1 <= int(kept.sum()) <= math.ceil(0.25 * active) + 1  # ties at the threshold may add one
        assert (kept <= mask).all()
        assert entropy[kept.bool()].min() >= entropy[mask.bool() & ~kept.bool()].max()


@pytest.mark.parametrize("coef, moves", [(0.0, False), (0.5, True)])
def test_entropy_bonus_has_a_gradient_of_its_own(tmp_path, tiny_model_dir, prompts_file, coef, moves):
    # Equal rewards give every advantage 0 and beta 0 drops the KL: without the bonus nothing is learnt.
    config = tiny_config(tiny_model_dir, prompts_file, set=[
        "schedule.max_steps=1", "grpo.beta=0", f"grpo.entropy_coef={coef}"])
    config.rewards.source = CONSTANT_REWARD
    run_dir = train(config, tmp_path / "run", progress=False)
    grad_norm = read_metrics(run_dir)["grad_norm"].iloc[0]
    assert (grad_norm > 1e-6) == moves, grad_norm


TWO_FUNCTIONS_FIRST_UNSCORABLE = """
def shorter(prompts, completions, **kwargs):
    return [None if index % 4 == 0 else -len(text) / 20 for index, text in enumerate(completions)]

def has_e(prompts, completions, **kwargs):
    return [None if index % 4 == 0 else float("e" in text) for index, text in enumerate(completions)]
"""


def test_normalize_then_sum_advantages(tmp_path, tiny_model_dir, prompts_file):
    config = tiny_config(tiny_model_dir, prompts_file, set=[
        "schedule.max_steps=1", "optim.prompts_per_step=2", "optim.gradient_accumulation_steps=2",
        "grpo.multi_objective_aggregation=normalize_then_sum"])
    config.rewards.source = TWO_FUNCTIONS_FIRST_UNSCORABLE
    config.rewards.weights = {"has_e": 2.0}
    run_dir = train(config, tmp_path / "run", progress=False)
    groups = read_rollouts(run_dir, step=1)["groups"]
    assert len(groups) == 4  # 2 prompts x 2 micro-batches
    nan = float("nan")
    per_function = torch.tensor([[nan if v is None else v for v in (s, e)] for group in groups
                                 for s, e in zip(group["rewards"]["shorter"], group["rewards"]["has_e"])])
    # Each function normalised within its group, weighted, summed; then standardised over the whole step.
    scores = grpo_loss.group_normalised_rewards(per_function, torch.tensor([1.0, 2.0]), 4)
    scored = scores[~scores.isnan()]
    expected = torch.nan_to_num((scores - scored.mean()) / (scored.std() + 1e-4), nan=0.0)
    advantages = [a for group in groups for a in group["advantages"]]
    assert advantages == pytest.approx(expected.tolist(), abs=1e-5)
    assert [group["advantages"][0] for group in groups] == [0.0] * 4  # the unscorable first of each group
    assert read_metrics(run_dir)["rewards/unscorable"].iloc[0] == 4


def test_step_reward_moments_of_one_process():
    mean, std = trainer_module.step_reward_moments([torch.tensor([1.0, float("nan")]), torch.tensor([3.0])],
                                                   trainer_module.Processes())
    assert (mean, std) == pytest.approx((2.0, math.sqrt(2.0)))


# ---- what the config refuses, and why -------------------------------------------------------------


def problems(*assignments: str) -> list[str]:
    config = RunConfig()
    config.rewards.source = CONSTANT_REWARD
    return config.with_overrides(list(assignments)).problems()


def test_the_variants_defaults_are_trls_and_valid():
    grpo = RunConfig().grpo
    assert (grpo.importance_sampling_level, grpo.delta, grpo.sapo_temperature_pos, grpo.sapo_temperature_neg,
            grpo.top_entropy_quantile, grpo.entropy_coef, grpo.multi_objective_aggregation) == (
        "token", None, 1.0, 1.05, 1.0, 0.0, "sum_then_normalize")
    assert problems() == []


@pytest.mark.parametrize("loss_type", ["bnpo", "dr_grpo", "dapo", "cispo"])
def test_sequence_level_with_a_token_sum_loss_is_refused(loss_type):
    found = problems("grpo.importance_sampling_level=sequence", f"grpo.loss_type={loss_type}", "grpo.epsilon_high=5")
    assert any("importance_sampling_level" in p and "long completions weigh more" in p for p in found), found


@pytest.mark.parametrize("loss_type", ["grpo", "sapo"])
def test_sequence_level_with_a_per_sequence_loss_is_accepted(loss_type):
    assert problems("grpo.importance_sampling_level=sequence", f"grpo.loss_type={loss_type}") == []


def test_cispo_needs_an_epsilon_high_of_at_least_one():
    assert any("ScaleRL recommends 5" in p for p in problems("grpo.loss_type=cispo"))
    assert any("grpo.epsilon_high" in p for p in problems("grpo.loss_type=cispo", "grpo.epsilon_high=0.28"))
    assert problems("grpo.loss_type=cispo", "grpo.epsilon_high=5") == []


def test_delta_must_exceed_the_clip_and_belong_to_a_clipped_loss():
    assert problems("grpo.delta=4") == []
    assert any("1 + epsilon_high (1.28)" in p for p in problems("grpo.delta=1.2", "grpo.epsilon_high=0.28"))
    assert any("sapo has no such term" in p for p in problems("grpo.delta=4", "grpo.loss_type=sapo"))


@pytest.mark.parametrize("assignment, field", [
    ("grpo.importance_sampling_level=episode", "grpo.importance_sampling_level"),
    ("grpo.top_entropy_quantile=1.5", "grpo.top_entropy_quantile"),
    ("grpo.top_entropy_quantile=-0.1", "grpo.top_entropy_quantile"),
    ("grpo.entropy_coef=-1", "grpo.entropy_coef"),
    ("grpo.sapo_temperature_pos=0", "grpo.sapo_temperature_pos"),
    ("grpo.sapo_temperature_neg=.nan", "grpo.sapo_temperature_neg"),
    ("grpo.multi_objective_aggregation=mean", "grpo.multi_objective_aggregation"),
    ("grpo.loss_type=ppo", "grpo.loss_type"),
])
def test_out_of_range_variant_values_name_their_field(assignment, field):
    found = problems(assignment)
    assert found and all(p.startswith(field) for p in found), found


def test_variants_survive_yaml_and_the_cli():
    config = RunConfig().with_overrides([
        "grpo.loss_type=sapo", "grpo.importance_sampling_level=sequence", "grpo.sapo_temperature_neg=2",
        "grpo.top_entropy_quantile=0.2", "grpo.entropy_coef=0.001", "grpo.multi_objective_aggregation=normalize_then_sum"])
    again = RunConfig.from_yaml(config.to_yaml())
    assert again.grpo == config.grpo and again.grpo.sapo_temperature_neg == 2.0
    with pytest.raises(ConfigError, match="grpo.delta"):
        RunConfig().with_overrides(["grpo.delta=large"])


def test_batched_rewards_receive_the_sampled_tokens(tmp_path, tiny_model_dir, prompts_file):
    # What DAPO's soft overlong punishment (the reward library's) measures: tokens as sampled, EOS included.
    config = tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=1"])
    config.rewards.source = "def token_count(completions, completion_ids, **kwargs):\n" \
                            "    return [float(len(ids)) for ids in completion_ids]\n"
    run_dir = train(config, tmp_path / "run", progress=False)
    group = read_rollouts(run_dir, step=1)["groups"][0]
    assert group["rewards"]["token_count"] == [float(n) for n in group["completion_tokens"]]
