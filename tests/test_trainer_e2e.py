"""End to end on a tiny random Llama: the run directory, stop / resume, faulty rewards, learning."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch

from rft import jobs
from rft.config import DataConfig, ModelConfig, OptimConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig
from rft.grpo.trainer import Trainer, train
from rft.runs import RunWriter, effective_state, list_checkpoints, read_metrics, read_rollouts, read_status
from waiting import wait_for

SHORT_IS_BETTER = "def shorter_is_better(prompt, completion, example):\n    return -len(completion) / 20\n"

EXPECTED_METRICS = [
    "step", "reward", "reward_std", "group_rewards", "advantages/mean", "advantages/std", "frac_reward_zero_std",
    "kl", "loss", "clip_ratio/low", "clip_ratio/high", "clip_ratio/region", "entropy", "completion_length/mean",
    "completion_length/min", "completion_length/max", "completion_length/clipped_ratio", "learning_rate",
    "grad_norm", "tokens_generated", "time/generate", "time/score", "time/train", "time/step",
    "tokens_per_second", "memory/peak_mb",
]


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "prompts.jsonl"
    rows = [{"prompt": f"Say something short, number {i}.", "topic": f"t{i % 3}"} for i in range(16)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(model_dir, prompts_file, **overrides) -> RunConfig:
    config = RunConfig(
        name="tiny",
        model=ModelConfig(name_or_path=str(model_dir)),
        data=DataConfig(preset=None, path=str(prompts_file)),
        rewards=RewardsConfig(source=SHORT_IS_BETTER, timeout_s=2.0),
        sampling=SamplingConfig(num_generations=4, max_completion_length=8, top_k=10),
        optim=OptimConfig(learning_rate=1e-2),
        schedule=ScheduleConfig(max_steps=3, save_every=2),
    )
    return config.with_overrides(overrides.get("set", []))


def test_three_steps_write_the_whole_run_directory(tmp_path, tiny_model_dir, prompts_file):
    run_dir = train(tiny_config(tiny_model_dir, prompts_file), tmp_path / "run", progress=False)

    assert read_status(run_dir)["state"] == "finished"
    metrics = read_metrics(run_dir)
    assert metrics["step"].tolist() == [1, 2, 3]
    for key in EXPECTED_METRICS + ["rewards/shorter_is_better/mean", "rewards/shorter_is_better/std"]:
        assert key in metrics.columns, key
    assert all(len(groups) == 1 and len(groups[0]) == 4 for groups in metrics["group_rewards"])
    assert (metrics["completion_length/max"] <= 8).all()
    assert metrics.loc[1, "kl"] == pytest.approx(0.0, abs=1e-6)  # a fresh adapter is the reference

    rollouts = read_rollouts(run_dir, step=2)
    group = rollouts["groups"][0]
    for key in ("prompt", "completions", "rewards", "total", "advantages", "completion_tokens", "truncated", "example"):
        assert key in group, key
    assert group["example"]["topic"].startswith("t")
    expected_totals = [-len(c) / 20 for c in group["completions"]]
    assert group["total"] == pytest.approx(expected_totals, abs=1e-5)
    assert sum(group["advantages"]) == pytest.approx(0.0, abs=1e-4)

    assert list_checkpoints(run_dir) == [2, 3]
    for name in ("adapter_model.safetensors", "adapter_config.json", "trainer_state.pt"):
        assert (run_dir / "checkpoints" / "step-3" / name).exists()
    assert "checkpoint saved: step-3" in (run_dir / "logs.txt").read_text()
    assert "shorter_is_better" in (run_dir / "config.yaml").read_text()


def test_faulty_reward_functions_do_not_stop_training(tmp_path, tiny_model_dir, prompts_file):
    source = SHORT_IS_BETTER + '''
def raises(prompt, completion, example):
    raise RuntimeError("boom")

def loops(prompt, completion, example):
    while True:
        pass

def garbage(prompt, completion, example):
    print("garbage was called")
    return "not a number"
'''
    config = tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=2", "rewards.timeout_s=0.5"])
    config.rewards.source = source
    run_dir = train(config, tmp_path / "run", progress=False)

    assert read_status(run_dir)["state"] == "finished"
    metrics = read_metrics(run_dir)
    assert metrics["step"].tolist() == [1, 2]
    for name in ("raises", "loops", "garbage"):
        assert (metrics[f"rewards/{name}/missing"] == 4).all()
    assert (metrics["rewards/shorter_is_better/missing"] == 0).all()
    logs = (run_dir / "logs.txt").read_text()
    assert "boom" in logs and "garbage was called" in logs and "raises" in logs


FIRST_OF_EACH_GROUP_UNSCORABLE = """
def first_of_group_unscorable(prompts, completions, **kwargs):
    return [None if index % 4 == 0 else -len(text) / 20 for index, text in enumerate(completions)]
"""


def test_completions_no_function_could_score_are_left_out_and_counted(tmp_path, tiny_model_dir, prompts_file):
    config = tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=2", "optim.prompts_per_step=2"])
    config.rewards.source = FIRST_OF_EACH_GROUP_UNSCORABLE
    run_dir = train(config, tmp_path / "run", progress=False)

    metrics = read_metrics(run_dir)
    assert metrics["rewards/unscorable"].tolist() == [2, 2]  # two groups of 4 a step
    for step in (1, 2):
        groups = read_rollouts(run_dir, step=step)["groups"]
        scored = []
        for group in groups:
            assert group["total"][0] is None and group["advantages"][0] == 0.0
            rewards = np.array(group["total"][1:])
            std = rewards.std(ddof=1)
            expected = (rewards - rewards.mean()) / (std + 1e-4) if std > 1e-6 else np.zeros(3)
            assert group["advantages"][1:] == pytest.approx(expected.tolist(), abs=1e-5)
            scored += group["total"][1:]
        row = metrics.loc[step]
        assert row["reward"] == pytest.approx(np.mean(scored), abs=1e-5)
        assert row["reward_std"] == pytest.approx(np.std(scored, ddof=1), abs=1e-5)


def test_unscorable_completions_are_out_of_the_loss(tmp_path, tiny_model_dir, prompts_file):
    config = tiny_config(tiny_model_dir, prompts_file, set=["optim.prompts_per_step=2"])
    config.rewards.source = FIRST_OF_EACH_GROUP_UNSCORABLE
    RunWriter(tmp_path / "run").create(config)
    trainer = Trainer(config, tmp_path / "run")
    trainer.setup()
    trainer.start_rewards(0)
    try:
        batch = trainer.rollout_and_score(1, 0, {"generate": 0.0, "score": 0.0, "train": 0.0})
    finally:
        trainer.rewards.close()
    completion_mask = batch.rollout.completion_mask
    assert batch.loss_mask[0::4].sum() == 0  # the unscorable rows
    scorable = [row for row in range(8) if row % 4]
    assert torch.equal(batch.loss_mask[scorable], completion_mask[scorable])
    assert completion_mask[0::4].sum() > 0  # they did have tokens to drop


def test_batch_scaling_divides_by_the_std_of_the_whole_step(tmp_path, tiny_model_dir, prompts_file):
    config = tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=2", "optim.gradient_accumulation_steps=2",
                                                          "grpo.scale_rewards=batch"])
    run_dir = train(config, tmp_path / "run", progress=False)

    informative = 0
    for step in (1, 2):
        groups = read_rollouts(run_dir, step=step)["groups"]
        assert len(groups) == 2  # one group from each micro-batch
        step_std = np.std([total for group in groups for total in group["total"]], ddof=1)
        for group in groups:
            rewards = np.array(group["total"])
            expected = (rewards - rewards.mean()) / (step_std + 1e-4) if rewards.std() > 1e-6 else np.zeros(4)
            assert group["advantages"] == pytest.approx(expected.tolist(), abs=1e-5)
            # Only a group whose own std differs from the step's tells the two apart.
            informative += rewards.std() > 1e-6 and abs(rewards.std(ddof=1) - step_std) > 1e-3
    assert informative, "every group had zero spread or the step's std: the test checks nothing"


def test_kl_bias_correction_changes_the_update_not_the_logged_kl(tmp_path, tiny_model_dir, prompts_file):
    rows = {}
    for corrected in (True, False):
        config = tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=2", "schedule.save_every=0",
                                                              f"grpo.use_bias_correction_kl={str(corrected).lower()}"])
        rows[corrected] = read_metrics(train(config, tmp_path / f"run-{corrected}", progress=False)).loc[2]
    # Step 1 is the same in both (KL 0 against a fresh adapter), so step 2 samples the same completions
    # from the same policy: the same plain k3 KL, but the correction adds KL x d logp to the gradient.
    assert rows[True]["kl"] == pytest.approx(rows[False]["kl"]) and rows[True]["kl"] > 0
    assert rows[True]["grad_norm"] != pytest.approx(rows[False]["grad_norm"], rel=1e-6)


def test_learning_short_answers_raises_the_reward(tmp_path, tiny_model_dir, prompts_file):
    # Without the KL bias correction: at this learning rate the tiny model moves far from its
    # reference within steps, and the corrected KL gradient, log(pi / pi_ref), pulls it back harder
    # than k3's, 1 - pi_ref / pi, where the policy raised a token. Over 30 steps the reward then
    # rose by 0.24, 1.06 and 0.32 (seeds 0, 1, 2) against 0.69, 1.75 and 2.06 without it.
    config = tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=30", "schedule.save_every=0",
                                                          "sampling.num_generations=8",
                                                          "grpo.use_bias_correction_kl=false"])
    run_dir = train(config, tmp_path / "run", progress=False)
    rewards = read_metrics(run_dir)["reward"].tolist()
    first, last = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert last > first + 0.5, f"reward did not improve: first steps {first:.3f}, last steps {last:.3f}"


def test_stop_and_resume_continue_the_step_count(tmp_path, tiny_model_dir, prompts_file):
    runs_root = tmp_path / "runs"
    config = tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=8", "schedule.save_every=100"])
    run_dir = jobs.start_job(config, runs_root)

    with pytest.raises(jobs.JobError, match="already"):
        jobs.start_job(config, runs_root)

    wait_for(lambda: read_status(run_dir).get("step", 0) >= 2, 120, "two steps")
    jobs.stop_job(run_dir)
    wait_for(lambda: read_status(run_dir).get("state") == "stopped", 60, "the graceful stop")
    stopped_at = read_status(run_dir)["step"]
    assert stopped_at < 8
    assert list_checkpoints(run_dir) == [stopped_at]  # the stop checkpointed the last step

    jobs.resume_job(run_dir)
    wait_for(lambda: read_status(run_dir).get("state") == "finished", 120, "the resumed run to finish")
    assert read_metrics(run_dir)["step"].tolist() == list(range(1, 9))
    assert f"resumed from step-{stopped_at}" in (run_dir / "logs.txt").read_text()



def test_a_finished_run_trained_on_takes_the_steps_a_longer_planned_run_takes(tmp_path, tiny_model_dir, prompts_file,
                                                                              capsys):
    from safetensors.torch import load_file

    from rft.__main__ import main

    settings = ["schedule.save_every=100", "optim.learning_rate=3e-2"]
    extended = train(tiny_config(tiny_model_dir, prompts_file, set=settings + ["schedule.max_steps=3"]),
                     tmp_path / "extended", progress=False)
    assert main(["resume", str(extended), "--no-progress"]) == 2
    assert "add --max-steps with more steps than 3" in capsys.readouterr().err
    assert main(["resume", str(extended), "--max-steps", "5", "--no-progress"]) == 0
    planned = train(tiny_config(tiny_model_dir, prompts_file, set=settings + ["schedule.max_steps=5"]),
                    tmp_path / "planned", progress=False)

    assert read_status(extended)["state"] == "finished"
    assert read_metrics(extended)["step"].tolist() == [1, 2, 3, 4, 5]
    for column in ("reward", "loss", "grad_norm"):
        np.testing.assert_allclose(read_metrics(extended)[column], read_metrics(planned)[column], rtol=1e-4)
    assert list_checkpoints(extended) == [3, 5]
    weights = [load_file(run / "checkpoints" / "step-5" / "adapter_model.safetensors") for run in (extended, planned)]
    for name, value in weights[1].items():
        torch.testing.assert_close(weights[0][name], value, rtol=1e-4, atol=1e-6)

def test_sigkill_then_resume_drops_nothing_and_duplicates_nothing(tmp_path, tiny_model_dir, prompts_file):
    config = tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=6", "schedule.save_every=2"])
    run_dir = jobs.start_job(config, tmp_path / "runs")
    wait_for(lambda: read_status(run_dir).get("step", 0) >= 3, 120, "three steps")
    os.killpg(os.getpgid(read_status(run_dir)["pid"]), signal.SIGKILL)
    wait_for(lambda: effective_state(read_status(run_dir)) == "failed", 30, "the killed trainer to be noticed")

    jobs.resume_job(run_dir)
    wait_for(lambda: read_status(run_dir).get("state") == "finished", 120, "the resumed run to finish")
    assert read_metrics(run_dir)["step"].tolist() == [1, 2, 3, 4, 5, 6]
    lines = (run_dir / "rollouts.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5, 6]


def test_a_model_that_cannot_load_fails_the_run_with_the_reason(tmp_path, prompts_file):
    not_a_model = tmp_path / "empty-dir"
    not_a_model.mkdir()
    config = tiny_config(not_a_model, prompts_file)
    with pytest.raises(Exception):
        train(config, tmp_path / "run", progress=False)
    status = read_status(tmp_path / "run")
    assert status["state"] == "failed"
    assert "not a model" in status["error"] and str(not_a_model) in status["error"]


def test_bundled_smollm2_loads_and_generates():
    from rft.config import BUNDLED_MODEL
    from rft.data import render_prompt
    from rft.models import load_for_inference

    model, tokenizer = load_for_inference(BUNDLED_MODEL)
    text = render_prompt(tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(output[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer
