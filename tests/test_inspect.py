"""Inspect: the per-token loss of a stored completion, checked against an independent forward pass."""

from __future__ import annotations

import shutil

import pytest
import torch

from rft.inspect_tokens import TOKEN_COLUMNS, InspectError, inspect_completion, inspectable_steps, policies_for_step
from rft.policies import PolicyCache
from rft.runs import read_config, read_rollouts


@pytest.fixture(scope="module")
def cache():
    return PolicyCache(capacity=3, device="cpu")


def full_sequence_logprobs(model, tokenizer, prompt_text: str, completion_ids: list[int], temperature: float):
    """log p of each completion token from one plain forward pass over prompt + completion."""
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False).input_ids
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1:-1] / temperature
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(completion_ids)[:, None]).squeeze(-1)


def test_every_step_of_a_run_saved_every_step_can_be_inspected(tiny_run_dir):
    assert inspectable_steps(tiny_run_dir) == [1, 2, 3]
    policies = policies_for_step(tiny_run_dir, 2)
    assert policies.sampling.adapter.name == "step-1" and policies.updated.adapter.name == "step-2"
    assert policies.reference.adapter is None  # a fresh adapter's reference is the base model


def test_token_report_matches_the_policies_and_the_loss(tiny_run_dir, cache):
    report = inspect_completion(cache, tiny_run_dir, 2, 0, 1)
    group = read_rollouts(tiny_run_dir, 2)["groups"][0]
    assert report.completion == group["completions"][1] and report.advantage == pytest.approx(group["advantages"][1])
    tokens = report.tokens
    assert list(tokens.columns) == TOKEN_COLUMNS and len(tokens) >= 1

    config = read_config(tiny_run_dir)
    model, tokenizer = cache.load(policies_for_step(tiny_run_dir, 2).sampling)
    ids = tokenizer(report.completion, add_special_tokens=False).input_ids
    if not group["truncated"][1]:
        ids.append(tokenizer.eos_token_id)
    expected = full_sequence_logprobs(model, tokenizer, group["prompt_text"], ids, config.sampling.temperature)
    assert torch.tensor(tokens["p_sampled"].values).log() == pytest.approx(expected, abs=1e-4)

    assert tokens["ratio"].values == pytest.approx((tokens["p_updated"] / tokens["p_sampled"]).values, rel=1e-4)
    assert (tokens["kl"] >= 0).all() and tokens["kl"].max() > 0  # checkpoint 1 differs from the base
    eps = config.grpo.epsilon_low
    advantage = report.advantage
    clipped_ratio = tokens["ratio"].clip(1 - eps, 1 + eps)
    objective = (tokens["ratio"] * advantage).combine(clipped_ratio * advantage, min)
    assert tokens["contribution"].values == pytest.approx((objective - config.grpo.beta * tokens["kl"]).values, abs=1e-5)
    expected_clipped = [("low" if r < 1 - eps and advantage < 0 else "high" if r > 1 + eps and advantage > 0 else "")
                        for r in tokens["ratio"]]
    assert tokens["clipped"].tolist() == expected_clipped
    assert report.highest_kl(3)["kl"].is_monotonic_decreasing
    assert (report.most_clipped()["clipped"] != "").all()


def test_step_one_is_sampled_by_the_reference_so_its_kl_is_zero(tiny_run_dir, cache):
    report = inspect_completion(cache, tiny_run_dir, 1, 0, 0)
    assert report.tokens["kl"].abs().max() == pytest.approx(0.0, abs=1e-6)
    assert (report.tokens["p_sampled"] == report.tokens["p_ref"]).all()


def test_missing_checkpoints_are_explained(tiny_run_dir, cache, tmp_path):
    copy = shutil.copytree(tiny_run_dir, tmp_path / "run")
    shutil.rmtree(copy / "checkpoints" / "step-3")
    report = inspect_completion(cache, copy, 3, 0, 0)
    assert (report.tokens["ratio"] == 1.0).all()
    assert any("No checkpoint of step 3" in note for note in report.notes)
    shutil.rmtree(copy / "checkpoints" / "step-1")
    assert inspectable_steps(copy) == [1, 3]
    with pytest.raises(InspectError, match="no checkpoint of step 1 is on disk"):
        inspect_completion(cache, copy, 2, 0, 0)


@pytest.mark.parametrize("step, group, sample, message", [(9, 0, 0, "no rollouts"), (2, 5, 0, "no group 5"),
                                                          (2, 0, 4, "no sample 4")])
def test_bad_picks_are_refused(tiny_run_dir, cache, step, group, sample, message):
    with pytest.raises(InspectError, match=message):
        inspect_completion(cache, tiny_run_dir, step, group, sample)
