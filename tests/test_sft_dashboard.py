"""The SFT warm start and the evaluation panel in the dashboard's logic (no browser)."""

import pandas as pd
import pytest

from rft import evaluation
from rft import train_form as form
from rft.tasks.arithmetic import reward_source
from rft.config import DataConfig, ModelConfig, RewardsConfig, RunConfig, SamplingConfig, ScheduleConfig, SFTConfig
from rft.grpo.trainer import train
from rft.monitoring import change_signature
from rft.runs import RunWriter
from ui import charts


def test_the_train_form_has_the_sft_fields_and_applies_them():
    paths = [field.path for field in form.HYPERPARAMETER_GROUPS["SFT warm start"]]
    assert paths == ["sft.enabled", "sft.examples", "sft.epochs", "sft.learning_rate", "sft.batch_size",
                     "sft.max_length"]
    config = form.config_from_values(RunConfig(), {"sft.enabled": True, "sft.examples": 32, "sft.epochs": 2.0})
    assert config.sft.enabled and config.sft.examples == 32 and config.sft.epochs == 2.0


def test_the_sft_loss_chart_draws_the_loss_or_says_there_is_none():
    rows = pd.DataFrame({"step": [1, 2, 3], "loss": [3.0, 2.0, 1.5]}).set_index("step", drop=False)
    figure = charts.sft_loss_chart(rows)
    assert list(figure.data[0].y) == [3.0, 2.0, 1.5] and "SFT" in figure.layout.title.text
    assert not charts.sft_loss_chart(pd.DataFrame()).data


def test_the_monitor_redraws_when_an_sft_row_is_written(tmp_path):
    before = change_signature(tmp_path)
    RunWriter(tmp_path).append_sft_metrics({"step": 1, "loss": 2.5})
    assert change_signature(tmp_path) != before


@pytest.fixture(scope="module")
def arithmetic_run(tmp_path_factory, tiny_model_dir):
    config = RunConfig(
        name="tiny-eval",
        model=ModelConfig(name_or_path=str(tiny_model_dir)),
        data=DataConfig(preset="arithmetic", limit=8),
        rewards=RewardsConfig(source=reward_source(), timeout_s=2.0),
        sampling=SamplingConfig(num_generations=2, max_completion_length=4),
        schedule=ScheduleConfig(max_steps=1, save_every=1),
        sft=SFTConfig(enabled=True, examples=8, batch_size=8),
    )
    return train(config, tmp_path_factory.mktemp("runs") / "run", progress=False)


def test_a_run_offers_its_base_model_warm_start_and_checkpoints(arithmetic_run):
    assert evaluation.evaluator_of(arithmetic_run).unit == "problems"
    assert evaluation.checkpoint_choices(arithmetic_run) == ["base model", "SFT warm start", "step 1"]
    assert evaluation.adapter_for(arithmetic_run, "base model") is None
    assert evaluation.adapter_for(arithmetic_run, "SFT warm start") == arithmetic_run / "checkpoints" / "sft"
    assert evaluation.adapter_for(arithmetic_run, "step 1") == arithmetic_run / "checkpoints" / "step-1"
    with pytest.raises(ValueError, match="not a checkpoint"):
        evaluation.adapter_for(arithmetic_run, "step 7")


def test_evaluating_a_checkpoint_shows_the_cli_table_and_command(arithmetic_run):
    text = evaluation.evaluate_checkpoint(arithmetic_run, "step 1", count=2)
    assert "problems solved" in text and "accuracy" in text
    assert "step 1, 2 problems" in text
    assert f"--adapter {arithmetic_run / 'checkpoints' / 'step-1'} --problems 2 --seed 0" in text


def test_a_run_on_a_dataset_file_without_held_out_rows_says_how_to_get_them(tmp_path):
    config = RunConfig(data=DataConfig(preset=None, path=str(tmp_path / "rows.jsonl")))
    RunWriter(tmp_path).create(config)
    assert evaluation.evaluator_of(tmp_path) is None and evaluation.evaluation_unit(tmp_path) == "held-out rows"
    with pytest.raises(ValueError, match="data.eval_size"):
        evaluation.evaluate_checkpoint(tmp_path, "base model")
