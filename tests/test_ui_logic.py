"""The dashboard's logic without a browser: the Train form, progress and ETA, downsampling,
rollout tables and reward-hacking flags, and the app's launch safety checks."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pandas as pd
import pytest

import app
from rft import train_form as form
from rft.config import ConfigError, DataConfig, GRPOConfig, RunConfig
from rft.monitoring import (
    HackingRule,
    best_and_worst,
    change_signature,
    downsample,
    flag_suspects,
    format_duration,
    group_table,
    reward_columns,
    reward_function_names,
    rollout_frame,
    run_progress,
    runs_frame,
    select_rollouts,
    suspect_count,
)
from rft.runs import RunWriter, list_runs

SIMPLE_REWARD = "def short(prompt, completion, example):\n    return -len(completion) / 10\n"


# ---- Train form -------------------------------------------------------------------------------

def test_every_form_field_names_a_real_config_field_with_help():
    config = RunConfig()
    for field in form.ALL_FIELDS:
        form.get_path(config, field.path)  # raises AttributeError for a typo
        assert field.help and field.label
    assert len({f.element_id for f in form.ALL_FIELDS}) == len(form.ALL_FIELDS)
    assert list(form.HYPERPARAMETER_GROUPS) == ["Sampling", "GRPO", "GRPO variants", "Optimisation", "LoRA",
                                                "Schedule", "Environment", "SFT warm start"]


def test_every_grpo_knob_is_in_the_form_and_a_variant_round_trips():
    paths = {f.path for f in form.ALL_FIELDS}
    assert {f"grpo.{f.name}" for f in dataclasses.fields(GRPOConfig)} <= paths
    values = {f.path: v for f, v in zip(form.ALL_FIELDS, form.field_values(RunConfig()))}
    values.update({"grpo.loss_type": "sapo", "grpo.importance_sampling_level": "sequence", "grpo.delta": "",
                   "grpo.top_entropy_quantile": 0.2, "grpo.multi_objective_aggregation": "normalize_then_sum",
                   "rewards.source": SIMPLE_REWARD})
    config = form.config_from_values(RunConfig(), values)
    assert (config.grpo.loss_type, config.grpo.importance_sampling_level, config.grpo.delta) == ("sapo", "sequence", None)
    assert config.problems() == []
    refused = form.config_from_values(RunConfig(), {**values, "grpo.loss_type": "dapo"})
    assert any(p.startswith("grpo.importance_sampling_level") for p in refused.problems())


def test_form_values_become_a_config_and_empty_optional_fields_mean_off():
    values = {f.path: v for f, v in zip(form.ALL_FIELDS, form.field_values(RunConfig()))}
    values.update({"sampling.num_generations": 4.0, "schedule.max_steps": 6, "grpo.epsilon_high": "0.28",
                   "schedule.epochs": "", "data.limit": " ", "name": "demo", "rewards.source": SIMPLE_REWARD})
    config = form.config_from_values(RunConfig(), values)
    assert config.sampling.num_generations == 4
    assert config.grpo.epsilon_high == pytest.approx(0.28)
    assert config.schedule.epochs is None and config.data.limit is None
    assert config.name == "demo" and config.problems() == []


def test_bad_form_values_name_the_field():
    with pytest.raises(ConfigError) as error:
        form.config_from_values(RunConfig(), {"sampling.num_generations": 2.5, "optim.learning_rate": "fast"})
    text = " ".join(error.value.problems)
    assert "sampling.num_generations" in text and "optim.learning_rate" in text
    with pytest.raises(ConfigError, match="finite"):
        form.config_from_values(RunConfig(), {"grpo.beta": float("nan")})
    too_small = form.config_from_values(RunConfig(), {"sampling.num_generations": 1})
    assert any("num_generations" in p for p in too_small.problems())


def test_a_fraction_in_a_whole_number_field_is_refused_not_rounded():
    import gradio as gr

    from ui.train_tab import _field_input

    [field] = [f for f in form.ALL_FIELDS if f.path == "sampling.num_generations"]
    with gr.Blocks():
        number_box = _field_input(field, 4)
    with pytest.raises(ConfigError, match=r"sampling\.num_generations: expected a whole number, got 2\.5"):
        form.config_from_values(RunConfig(), {field.path: number_box.preprocess(2.5)})
    assert form.config_from_values(RunConfig(), {field.path: number_box.preprocess(6)}).sampling.num_generations == 6
    with pytest.raises(ConfigError, match=r"data\.limit: expected a whole number, got 2\.5"):  # an optional text box
        form.config_from_values(RunConfig(), {"data.limit": "2.5"})
    assert form.config_from_values(RunConfig(), {"data.limit": "1e3"}).data.limit == 1000


def test_effective_batch_summary_multiplies_out_the_batch():
    config = RunConfig()
    config.optim.prompts_per_step, config.sampling.num_generations = 2, 8
    config.optim.gradient_accumulation_steps, config.sampling.max_completion_length = 3, 64
    summary = form.effective_batch_summary(config)
    assert "48 completions per step" in summary and "3,072 generated tokens" in summary
    config.sampling.num_generations = 2
    assert "Few completions per group" in form.effective_batch_summary(config)


def test_cli_command_quotes_paths():
    assert form.cli_command("my runs/a.yaml") == "python -m rft train --config 'my runs/a.yaml'"


def test_uploads_are_kept_next_to_the_runs_and_never_overwritten(tmp_path):
    first = tmp_path / "a" / "data.jsonl"
    second = tmp_path / "b" / "data.jsonl"
    for path, text in ((first, '{"prompt": "x"}\n'), (second, '{"prompt": "y"}\n')):
        path.parent.mkdir()
        path.write_text(text)
    runs = tmp_path / "runs"
    stored_first = form.store_upload(first, runs)
    assert form.store_upload(first, runs) == stored_first
    stored_second = form.store_upload(second, runs)
    assert stored_second != stored_first and stored_second.read_text() == '{"prompt": "y"}\n'


def test_dataset_preview_reports_problems_instead_of_raising(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"prompt": f"say {i}", "answer": str(i)}) + "\n" for i in range(8)))
    preview = form.preview_dataset(DataConfig(preset=None, path=str(good)))
    assert len(preview.rows) == form.PREVIEW_ROWS and list(preview.frame.columns) == ["prompt", "answer"]
    assert "8 rows" in preview.message
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no prompt column"}\n')
    failed = form.preview_dataset(DataConfig(preset=None, path=str(bad)))
    assert failed.rows == [] and "no 'prompt' column" in failed.message


def test_the_preview_shows_prompts_as_the_chosen_model_sees_them(tmp_path, tiny_model_dir):
    rows = tmp_path / "rows.jsonl"
    rows.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "4"}) + "\n"
                    + json.dumps({"question": "word " * 300, "answer": "long"}) + "\n")
    data = DataConfig(preset=None, path=str(rows), prompt_column="question", max_prompt_length=64)
    preview = form.preview_dataset(data, model=str(tiny_model_dir))
    assert list(preview.frame.columns) == ["prompt", "tokens", "answer"]
    first = preview.frame["prompt"][0]
    assert first.startswith("<|im_start|>") and "What is 2 + 2?" in first and first.endswith("<|im_start|>assistant\n")
    assert preview.frame["tokens"][0] < 64 < preview.frame["tokens"][1]
    assert "1 of these 2 are over data.max_prompt_length=64" in preview.message
    unusable = form.preview_dataset(data, model=str(tmp_path / "no-model-here"))
    assert list(unusable.frame.columns) == ["prompt", "answer"] and "shown as messages" in unusable.message


def test_built_in_datasets_have_recipes_and_untouched_recipe_code_is_recognised():
    arithmetic = form.recipe_for("arithmetic")
    assert arithmetic.data.preset == "arithmetic" and "def correct_answer" in arithmetic.rewards.source
    assert form.recipe_for("wordle").sft.enabled and form.recipe_for("Uploaded file") is None
    wordle_code = form.recipe_for("wordle").rewards.source
    assert form.is_untouched_recipe_code(wordle_code) and form.is_untouched_recipe_code(wordle_code + "\n\n")
    assert not form.is_untouched_recipe_code(wordle_code + "\ndef mine(prompt, completion, example):\n    return 1.0\n")


def test_weights_table_round_trip_and_bad_weight():
    from rft.rewards import check

    result = check(SIMPLE_REWARD + "\ndef other(prompt, completion, example):\n    return 1.0\n")
    table = form.weights_table(result.functions, {"other": 0.5})
    assert list(table["function"]) == ["short", "other"] and list(table["weight"]) == [1.0, 0.5]
    assert form.weights_from_table(table) == {"other": 0.5}
    table["weight"] = ["heavy", "0.5"]  # what an edited table cell sends back
    with pytest.raises(ValueError, match="short"):
        form.weights_from_table(table)


def test_try_rewards_scores_a_pasted_completion_and_shows_errors():
    rows = [{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": "2"}]
    source = SIMPLE_REWARD + "\ndef broken(prompt, completion, example):\n    return 1 / 0\n"
    frame, message, kind = form.try_rewards(source, {}, rows, DataConfig(preset=None, path="x"), "hello", 10.0)
    assert list(frame["short"]) == [-0.5, -0.5]
    assert frame["error"].str.contains("ZeroDivisionError").all()
    # A function that raised is a warning naming it and its error, not an "ok".
    assert kind == "warn" and "broken failed on 2 of 2: ZeroDivisionError: division by zero" in message
    frame, message, kind = form.try_rewards(SIMPLE_REWARD, {}, rows, DataConfig(preset=None, path="x"), "hi", 10.0)
    assert kind == "ok" and "failed" not in message
    frame, message, kind = form.try_rewards("def f(:\n", {}, rows, DataConfig(preset=None, path="x"), "hi", 10.0)
    assert frame.empty and "line 1" in message and kind == "error"


def test_a_launch_time_syntax_error_keeps_its_lines_so_the_caret_points_at_the_error():
    from rft import jobs
    from ui.common import problems_notice

    config = RunConfig()
    config.rewards.source = "def f(prompt, completion, example):\n    return len(completion +\n"
    [problem] = [p for p in jobs.preflight(config) if p.startswith("rewards.source")]
    shown = problems_notice("Cannot launch:", [problem, "model.name_or_path: x does not exist"])
    assert "<pre>rewards.source: line 2: syntax error: &#x27;(&#x27; was never closed\n" in shown
    assert "\n                  ^</pre>" in shown  # the caret under the unclosed parenthesis
    assert "<li>model.name_or_path: x does not exist</li>" in shown


# ---- progress, ETA, downsampling --------------------------------------------------------------

def test_format_duration():
    assert [format_duration(s) for s in (None, 5, 65, 3700)] == ["-", "5s", "1m 05s", "1h 01m"]


def test_progress_estimates_time_left_from_recent_steps():
    metrics = pd.DataFrame({"time/step": [2.0, 4.0]}, index=[1, 2])
    status = {"step": 2, "max_steps": 10, "started_at": 1000.0}
    progress = run_progress("running", status, metrics, now=1030.0)
    assert progress.elapsed_s == 30 and progress.remaining_s == pytest.approx(24.0)
    assert "step 2 of 10" in progress.describe() and "24s left" in progress.describe()
    finished = run_progress("finished", dict(status, step=10, updated_at=1100.0), metrics, now=5000.0)
    assert finished.elapsed_s == 100 and finished.remaining_s is None and finished.fraction == 1.0


def test_progress_during_the_sft_warm_start_counts_its_steps_and_time_left():
    status = {"step": 0, "max_steps": 30, "started_at": 1000.0, "phase": "sft", "sft_step": 3, "sft_steps": 8}
    sft_metrics = pd.DataFrame({"time/step": [9.0, 11.0, 10.0]}, index=[1, 2, 3])
    progress = run_progress("running", status, pd.DataFrame(), now=1040.0, sft_metrics=sft_metrics)
    assert (progress.step, progress.max_steps, progress.remaining_s) == (3, 8, pytest.approx(50.0))
    assert progress.describe() == "SFT warm start: step 3 of 8 · elapsed 40s · about 50s left until GRPO starts"
    # Elapsed is counted at render time: it moves on although the trainer wrote nothing since.
    assert run_progress("running", status, pd.DataFrame(), now=1100.0, sft_metrics=sft_metrics).elapsed_s == 100
    grpo = run_progress("running", dict(status, phase="training", step=2), pd.DataFrame(), now=1100.0,
                        sft_metrics=sft_metrics)
    assert grpo.describe().startswith("step 2 of 30") and not grpo.warm_start


def test_downsample_keeps_long_runs_small_and_the_last_step_exact():
    steps = np.arange(1, 10_001)
    metrics = pd.DataFrame({"step": steps, "reward": steps / 10_000, "group_rewards": [[0.0]] * len(steps)},
                           index=steps)
    shown = downsample(metrics, max_points=500)
    assert len(shown) == 500 and "group_rewards" not in shown
    assert shown.index[-1] == 10_000 and shown["step"].iloc[-1] == 10_000
    assert shown["reward"].is_monotonic_increasing
    small = downsample(metrics.head(20), max_points=500)
    assert len(small) == 20


def test_change_signature_moves_when_the_trainer_writes(tmp_path):
    before = change_signature(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n')
    assert change_signature(tmp_path) != before and change_signature(None) == ()


# ---- rollouts and reward hacking ------------------------------------------------------------

def rollout_record():
    return {"step": 3, "groups": [
        {"prompt": "p1", "completions": ["short good", "x" * 50, "meh", "bad"],
         "rewards": {"task": [1.0, 0.0, 0.5, 0.0], "format": [0.0, 2.0, 0.5, 0.0]},
         "total": [1.0, 2.0, 1.0, 0.0], "advantages": [0.0, 1.4, 0.0, -1.4],
         "completion_tokens": [4, 40, 5, 4], "truncated": [False, True, False, False]},
        {"prompt": "p2", "completions": ["a", "b"], "rewards": {"task": [0.5, 0.5], "format": [0.5, 0.5]},
         "total": [1.0, 1.0], "advantages": [0.0, 0.0], "completion_tokens": [3, 3], "truncated": [False, False]},
    ]}


def test_rollout_frame_flattens_groups():
    frame = rollout_frame(rollout_record())
    assert len(frame) == 6 and list(frame["group"]) == [1, 1, 1, 1, 2, 2]
    assert reward_columns(frame) == ["task", "format"]
    assert rollout_frame(None).empty


def test_group_table_marks_groups_without_signal():
    table = group_table(rollout_frame(rollout_record()))
    assert list(table["signal"]) == ["yes", "none (equal rewards)"]


def test_high_total_with_low_task_score_and_long_completions_are_flagged():
    flagged = flag_suspects(rollout_frame(rollout_record()), HackingRule(task_function="task"))
    hacked = flagged.iloc[1]["flags"]
    assert "high total, low task" in hacked and "long" in hacked and "truncated" in hacked
    assert flagged.iloc[0]["flags"] == ""  # high total earned by the task itself
    assert suspect_count(flagged) == 1
    assert list(select_rollouts(flagged, "suspected hacking", "total")["sample"]) == [2]
    best, worst = best_and_worst(flagged)
    assert best["completion"] == "x" * 50 and worst["completion"] == "bad"


def test_rollout_views_and_sorting():
    flagged = flag_suspects(rollout_frame(rollout_record()), HackingRule(task_function=None))
    assert list(select_rollouts(flagged, "all", "total")["total"])[0] == 2.0
    assert len(select_rollouts(flagged, "best of each group", "group")) == 2
    assert list(select_rollouts(flagged, "truncated", "total")["sample"]) == [2]


def test_reward_function_names_come_from_metric_columns():
    metrics = pd.DataFrame(columns=["reward", "rewards/a/mean", "rewards/a/std", "rewards/b_c/mean"])
    assert reward_function_names(metrics) == ["a", "b_c"]


def test_runs_frame_lists_runs_readably(tmp_path):
    config = RunConfig(name="demo")
    config.data.preset, config.data.path = None, "/data/train.jsonl"
    writer = RunWriter(tmp_path / "20250101-000000-demo")
    writer.create(config)
    writer.set_status("finished", step=5, max_steps=5, last_reward=0.25)
    frame = runs_frame(list_runs(tmp_path))
    row = frame.iloc[0]
    assert (row["run"], row["state"], row["model"], row["dataset"], row["steps"], row["last reward"]) == \
        ("20250101-000000-demo", "finished", "SmolLM2-135M-Instruct", "train.jsonl", "5 / 5", "0.250")


def test_a_run_picker_keeps_a_deleted_run_picked_and_marked(tmp_path):
    from ui.common import run_picker_update

    for run_id in ("20250101-000000-kept", "20250102-000000-deleted"):
        RunWriter(tmp_path / run_id).create(RunConfig())
    assert run_picker_update(tmp_path, None)["value"] == "20250102-000000-deleted"  # nothing picked: the newest
    shutil.rmtree(tmp_path / "20250102-000000-deleted")
    update = run_picker_update(tmp_path, "20250102-000000-deleted")
    assert update["value"] == "20250102-000000-deleted"
    assert update["choices"] == ["20250101-000000-kept",
                                 ("20250102-000000-deleted (deleted)", "20250102-000000-deleted")]
    assert run_picker_update(tmp_path, None)["value"] == "20250101-000000-kept"


# ---- app flags ---------------------------------------------------------------------------------

def test_only_loopback_is_served_without_a_password():
    assert app.is_loopback("127.0.0.1") and app.is_loopback("localhost") and app.is_loopback("::1")
    assert not app.is_loopback("0.0.0.0") and not app.is_loopback("192.168.1.5")
    app.check_exposure("127.0.0.1", None)
    app.check_exposure("0.0.0.0", [("a", "b")])
    with pytest.raises(app.LaunchRefused, match="--auth"):
        app.check_exposure("0.0.0.0", None)


def test_auth_from_a_flag_or_a_file(tmp_path):
    assert app.parse_auth(None) is None
    assert app.parse_auth("ann:s3cret:x") == [("ann", "s3cret:x")]
    secrets = tmp_path / "users.txt"
    secrets.write_text("# users\nann:one\nbob:two\n")
    assert app.parse_auth(str(secrets)) == [("ann", "one"), ("bob", "two")]
    with pytest.raises(app.LaunchRefused, match="user:password"):
        app.parse_auth("nopassword")


def test_app_refuses_an_open_host_without_auth(capsys):
    assert app.main(["--host", "0.0.0.0", "--port", "7999"]) == 2
    assert "reward-function editor" in capsys.readouterr().err
