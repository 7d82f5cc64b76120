"""Inspect: the per-token loss of a stored completion, checked against an independent forward pass."""

from __future__ import annotations

import json
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

    # The tokens and sampling log-probabilities are those the trainer stored with the rollouts, and
    # they are checkpoint 1's (the policy that sampled step 2), as a plain forward pass computes them.
    config = read_config(tiny_run_dir)
    assert len(tokens) == len(group["completion_ids"][1])
    assert torch.tensor(tokens["p_sampled"].values).log() == pytest.approx(torch.tensor(group["logp"][1]), abs=1e-5)
    model, tokenizer = cache.load(policies_for_step(tiny_run_dir, 2).sampling)
    expected = full_sequence_logprobs(model, tokenizer, group["prompt_text"], group["completion_ids"][1],
                                      config.sampling.temperature)
    assert torch.tensor(group["logp"][1]) == pytest.approx(expected, abs=1e-3)

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


def test_any_step_can_be_inspected_without_the_checkpoint_that_sampled_it(tiny_run_dir, cache, tmp_path):
    copy = shutil.copytree(tiny_run_dir, tmp_path / "run")
    shutil.rmtree(copy / "checkpoints" / "step-3")
    report = inspect_completion(cache, copy, 3, 0, 0)
    assert (report.tokens["ratio"] == 1.0).all()
    assert any("No checkpoint of step 3" in note for note in report.notes)
    shutil.rmtree(copy / "checkpoints" / "step-1")
    assert inspectable_steps(copy) == [1, 2, 3]  # the rollouts hold what sampled them
    report = inspect_completion(cache, copy, 2, 0, 0)
    assert any("as stored with the rollouts" in note for note in report.notes)
    assert (report.tokens["kl"] >= 0).all()


def test_an_older_runs_rollouts_need_the_sampling_checkpoint_which_is_explained(tiny_run_dir, cache, tmp_path):
    copy = shutil.copytree(tiny_run_dir, tmp_path / "run")
    lines = []
    for line in (copy / "rollouts.jsonl").read_text().splitlines():
        record = json.loads(line)
        for group in record["groups"]:
            for key in ("completion_ids", "logp", "entropy"):
                group.pop(key)
        lines.append(json.dumps(record))
    (copy / "rollouts.jsonl").write_text("\n".join(lines) + "\n")
    shutil.rmtree(copy / "checkpoints" / "step-1")
    assert inspectable_steps(copy) == [1, 3]
    with pytest.raises(InspectError, match="no checkpoint of step 1 is on disk"):
        inspect_completion(cache, copy, 2, 0, 0)
    report = inspect_completion(cache, copy, 3, 0, 0)
    assert any("re-encoded from the stored text" in note for note in report.notes)


@pytest.mark.parametrize("step, group, sample, message", [(9, 0, 0, "no rollouts"), (2, 5, 0, "no group 5"),
                                                          (2, 0, 4, "no sample 4")])
def test_bad_picks_are_refused(tiny_run_dir, cache, step, group, sample, message):
    with pytest.raises(InspectError, match=message):
        inspect_completion(cache, tiny_run_dir, step, group, sample)


def with_grpo(run_dir, tmp_path, **settings):
    """A copy of the run whose config names other loss settings (Inspect reads them from config.yaml)."""
    copy = shutil.copytree(run_dir, tmp_path / "run")
    config = read_config(copy)
    for name, value in settings.items():
        setattr(config.grpo, name, value)
    config.save(copy / "config.yaml")
    return copy


def test_entropy_mask_and_push_of_the_clipped_loss(tiny_run_dir, cache, tmp_path):
    run_dir = with_grpo(tiny_run_dir, tmp_path, beta=0.0, top_entropy_quantile=0.5)
    for with_update in (True, False):
        report = inspect_completion(cache, run_dir, 2, 0, 1)
        tokens = report.tokens
        assert any("top_entropy_quantile 0.5" in note for note in report.notes)
        # the threshold is over the whole group's tokens, so this completion's kept ones are its highest
        if tokens["trained"].any() and not tokens["trained"].all():
            assert tokens.loc[tokens["trained"], "entropy"].min() >= tokens.loc[~tokens["trained"], "entropy"].max()
        # d/d log p of min(ratio A, clip(ratio) A) is ratio A where unclipped, 0 where clipped or left out
        moving = tokens["trained"] & (tokens["clipped"] == "")
        expected = (tokens["ratio"] * report.advantage).where(moving, 0.0)
        assert tokens["push"].values == pytest.approx(expected.values, rel=1e-4, abs=1e-6)
        assert (tokens.loc[~tokens["trained"], "contribution"] == 0).all()
        assert tokens["gate"].isna().all() and (tokens["loss_ratio"] == tokens["ratio"]).all()
        if with_update:  # without checkpoint 2 the ratio is 1, nothing is clipped: the push is A on trained tokens
            shutil.rmtree(run_dir / "checkpoints" / "step-2")
    assert report.advantage != 0 and tokens["trained"].any() and (tokens["push"] == 0).any() == (~tokens["trained"]).any()
    assert tokens.loc[tokens["trained"], "push"].values == pytest.approx([report.advantage] * int(tokens["trained"].sum()))


def test_sequence_ratio_and_sapo_gate(tiny_run_dir, cache, tmp_path):
    run_dir = with_grpo(tiny_run_dir, tmp_path, loss_type="sapo", importance_sampling_level="sequence")
    report = inspect_completion(cache, run_dir, 2, 0, 1)
    tokens = report.tokens
    geometric_mean = float(torch.tensor(tokens["ratio"].values).log().mean().exp())
    assert tokens["loss_ratio"].values == pytest.approx([geometric_mean] * len(tokens), rel=1e-4)
    tau = 1.0 if report.advantage > 0 else 1.05
    s = torch.sigmoid(torch.tensor(tau * (geometric_mean - 1))).item()
    assert tokens["gate"].values == pytest.approx([4 * s * (1 - s)] * len(tokens), rel=1e-4)
    beta = read_config(run_dir).grpo.beta
    expected = 4 * s / tau * report.advantage - beta * tokens["kl"]
    assert tokens["contribution"].values == pytest.approx(expected.values, rel=1e-4, abs=1e-6)
    assert (tokens["clipped"] == "").all() and tokens["trained"].all()
    assert any("GSPO" in note for note in report.notes) and any("sapo" in note for note in report.notes)


def test_the_tab_shows_the_push_the_gate_and_the_left_out_tokens(tiny_run_dir, cache, tmp_path):
    from ui.inspect_tab import CLIPPED_COLUMNS, readable, tokens_html

    run_dir = with_grpo(tiny_run_dir, tmp_path, loss_type="sapo", top_entropy_quantile=0.5)
    report = inspect_completion(cache, run_dir, 2, 0, 1)
    shown = tokens_html(report)
    assert shown.count('<span class="tok') == len(report.tokens)
    assert "SAPO gate" in shown and "push" in shown
    assert shown.count("tok-untrained") == int((~report.tokens["trained"]).sum()) >= 1
    assert "gate" in readable(report.tokens[CLIPPED_COLUMNS]).data.columns
    plain = inspect_completion(cache, tiny_run_dir, 2, 0, 1)  # a grpo run: no gate to show
    assert "gate" not in readable(plain.tokens[CLIPPED_COLUMNS]).data.columns
    assert "SAPO gate" not in tokens_html(plain) and "tok-untrained" not in tokens_html(plain)
