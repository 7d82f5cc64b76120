"""Compare: picking policies, generating from two with the same seeds, scoring with a run's rewards,
and one run's rollouts of the same prompt at two steps; on the tiny model's 3-step run."""

from __future__ import annotations

import math

import pytest

from rft.compare import (
    CompareError,
    GenerationSettings,
    SideResult,
    compare_policies,
    dataset_prompts,
    generate,
    prompts_across_steps,
    rollouts_at_step,
    typed_prompt,
)
from rft.config import BUNDLED_MODEL
from rft.policies import (Policy, PolicyCache, PolicyError, base_policy, checkpoint_policy, is_checkpoint_key,
                          policy_choices, resolve_policy, run_policy_keys)
from rft.runs import read_config, read_rollouts


@pytest.fixture(scope="module")
def cache():
    return PolicyCache(capacity=2, device="cpu")


def test_choices_list_the_base_model_once_and_every_checkpoint(tiny_run_dir):
    runs_root, run_id = tiny_run_dir.parent, tiny_run_dir.name
    choices = policy_choices(runs_root, [run_id])
    bundled = f"{BUNDLED_MODEL}@model"  # playable before any run of it exists
    assert [key for _, key in choices] == [f"{run_id}@base", bundled, f"{run_id}@1", f"{run_id}@2", f"{run_id}@3"]
    assert resolve_policy(runs_root, f"{run_id}@2").adapter == tiny_run_dir / "checkpoints" / "step-2"
    assert resolve_policy(runs_root, f"{run_id}@base").adapter is None
    assert resolve_policy(runs_root, bundled) == Policy(BUNDLED_MODEL, None, f"base model ({BUNDLED_MODEL})")
    assert [key for _, key in policy_choices(runs_root, [])] == [bundled]
    assert [is_checkpoint_key(key) for key in (bundled, f"{run_id}@base", f"{run_id}@sft", f"{run_id}@3")] == \
        [False, False, True, True]
    # A run's own pair for Compare: where it started (no warm start: its base model), its last checkpoint.
    assert run_policy_keys(runs_root, run_id) == (f"{run_id}@base", f"{run_id}@3")
    with pytest.raises(PolicyError, match="no SFT warm start"):
        resolve_policy(runs_root, f"{run_id}@sft")


@pytest.mark.parametrize("key, message", [
    (None, "Choose a policy"),
    ("no-such-run@1", "no longer exists"),
    ("../escape@1", "not a valid run id"),
])
def test_unknown_policies_are_refused_with_a_reason(tiny_run_dir, key, message):
    with pytest.raises(PolicyError, match=message):
        resolve_policy(tiny_run_dir.parent, key)


def test_a_missing_checkpoint_names_the_ones_there_are(tiny_run_dir):
    with pytest.raises(PolicyError, match=r"no checkpoint at step 9 \(checkpoints: 1, 2, 3\)"):
        resolve_policy(tiny_run_dir.parent, f"{tiny_run_dir.name}@9")


def test_the_cache_keeps_the_most_recently_used_policies(tiny_run_dir, cache):
    first = cache.load(checkpoint_policy(tiny_run_dir, 1))
    assert cache.load(checkpoint_policy(tiny_run_dir, 1)) is first
    cache.load(checkpoint_policy(tiny_run_dir, 2))
    cache.load(checkpoint_policy(tiny_run_dir, 3))
    assert len(cache) == 2
    assert cache.load(checkpoint_policy(tiny_run_dir, 1)) is not first  # evicted, loaded again


def test_same_seed_same_policy_gives_the_same_completions_scored_by_the_runs_rewards(tiny_run_dir, cache):
    config = read_config(tiny_run_dir)
    prompt = dataset_prompts(config)[0]
    assert prompt.label == "1. Say something short, number 0."
    settings = GenerationSettings.from_run(config, num_completions=3, seed=7)
    assert settings.max_new_tokens == 8 and settings.top_k == 10  # the run's own sampling settings
    base = base_policy(tiny_run_dir)
    left, right, trained = compare_policies(cache, [base, base, checkpoint_policy(tiny_run_dir, 3)], prompt, config,
                                            settings)
    assert left.completions == right.completions and len(left.completions) == 3
    assert left.scores["shorter_is_better"] == pytest.approx([-len(c) / 20 for c in left.completions])
    assert left.totals == pytest.approx(left.scores["shorter_is_better"])
    assert left.mean_total == pytest.approx(sum(left.totals) / 3)
    assert trained.title == f"{tiny_run_dir.name} · step 3"
    assert [row["#"] for row in trained.rows()] == [1, 2, 3]


def test_another_seed_changes_the_samples(tiny_run_dir, cache):
    config = read_config(tiny_run_dir)
    model, tokenizer = cache.load(base_policy(tiny_run_dir))
    messages = typed_prompt("Tell me a story.", config).messages
    samples = [generate(model, tokenizer, messages, GenerationSettings.from_run(config, num_completions=4, seed=seed))
               for seed in (1, 1, 2)]
    assert samples[0] == samples[1] != samples[2]


def test_bad_settings_and_empty_prompts_are_refused(tiny_run_dir, cache):
    config = read_config(tiny_run_dir)
    with pytest.raises(CompareError, match="Type a prompt"):
        typed_prompt("   ", config)
    settings = GenerationSettings(num_completions=0, temperature=0.0)
    assert any("completions" in p for p in settings.problems()) and any("temperature" in p for p in settings.problems())
    with pytest.raises(CompareError, match="completions"):
        compare_policies(cache, [base_policy(tiny_run_dir)], typed_prompt("hi", config), config, settings)


def test_the_same_prompt_at_two_steps_comes_from_the_rollouts(tiny_run_dir):
    stored = prompts_across_steps(tiny_run_dir)
    # Two prompts, unshuffled, one per step: the first is rolled out at steps 1 and 3.
    assert [p.steps for p in stored] == [[1, 3], [2]]
    assert stored[0].label == "Say something short, number 0."
    first, third = (rollouts_at_step(tiny_run_dir, step, stored[0].text) for step in (1, 3))
    group = read_rollouts(tiny_run_dir, 3)["groups"][0]
    assert third.completions == group["completions"] and third.totals == group["total"]
    assert third.scores["shorter_is_better"] == group["rewards"]["shorter_is_better"]
    assert first.title == "step 1" and not math.isnan(first.mean_total)
    with pytest.raises(CompareError, match="not rolled out at step 2"):
        rollouts_at_step(tiny_run_dir, 2, stored[0].text)


def test_a_side_names_the_scores_it_lost():
    from ui.compare_tab import side_summary

    side = SideResult("base model (m)", ["a", "b"], {"format": [1.0, math.nan]}, [1.0, 0.0],
                      ["", "format: KeyError: 'secret'"])
    text = side_summary(side)
    assert "mean total <b>0.500</b>" in text and "format 1.000" in text
    assert "1 completion(s) lost a score: format: KeyError: &#x27;secret&#x27;" in text
