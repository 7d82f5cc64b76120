"""Evaluate any dataset: held-out rows never trained on, scored by the run's own reward functions,
periodically during training, from the CLI and for any checkpoint."""

from __future__ import annotations

import json

import pytest

from rft import data as datasets
from rft.__main__ import main
from rft.config import ConfigError, DataConfig
from rft.grpo.trainer import train
from rft.held_out import function_summary
from rft.runs import read_eval_metrics, read_status
from test_trainer_e2e import prompts_file, tiny_config  # noqa: F401

BINARY_AND_GRADED = (
    "def short(prompt, completion, example):\n    return 1.0 if len(completion) < 12 else 0.0\n\n"
    "def shorter_is_better(prompt, completion, example):\n    return -len(completion) / 20\n"
)


def test_a_file_holds_out_a_fixed_set_of_rows_that_training_never_sees(prompts_file):
    data = DataConfig(preset=None, path=str(prompts_file), eval_size=4)
    training, held_out = datasets.load_rows(data), datasets.load_held_out_rows(data)
    assert len(training) == 12 and len(held_out) == 4
    assert not {r["prompt"] for r in training} & {r["prompt"] for r in held_out}
    assert held_out == datasets.load_held_out_rows(data)  # the same rows every time
    assert datasets.load_held_out_rows(DataConfig(preset=None, path=str(prompts_file))) == []
    with pytest.raises(datasets.DatasetError, match="leave none"):
        datasets.load_rows(DataConfig(preset=None, path=str(prompts_file), eval_size=16))


def test_a_task_preset_holds_out_its_evaluator_items():
    from rft.tasks.arithmetic.evaluate import evaluation_problems

    rows = datasets.load_held_out_rows(DataConfig(preset="arithmetic", eval_size=5))
    assert [row["expression"] for row in rows] == evaluation_problems(5, seed=0)
    training = {row["expression"] for row in datasets.load_rows(DataConfig(preset="arithmetic", eval_size=5))}
    assert not training & {row["expression"] for row in rows}
    wordle = datasets.load_held_out_rows(DataConfig(preset="wordle", eval_size=12))
    from rft.tasks.wordle.dataset import held_out_secrets

    assert len(wordle) == 12 and {row["secret"] for row in wordle} <= set(held_out_secrets())


def test_periodic_evaluation_needs_held_out_rows(tiny_model_dir, prompts_file):
    with pytest.raises(ConfigError, match="data.eval_size"):
        tiny_config(tiny_model_dir, prompts_file, set=["schedule.eval_every=2"]).validate()


def test_summaries_give_intervals_and_pass_rates():
    binary = function_summary([1.0, 0.0, 1.0, 1.0, float("nan")])
    assert binary["binary"] and binary["mean"] == 0.75 and binary["missing"] == 1
    assert 0 < binary["low"] < 0.75 < binary["high"] <= 1
    graded = function_summary([-0.5, -0.3, -0.4])
    assert not graded["binary"] and graded["mean"] == pytest.approx(-0.4)
    assert graded["low"] < graded["mean"] < graded["high"]


def test_a_run_evaluates_its_held_out_rows_before_training_every_k_steps_and_at_the_end(
        tmp_path, tiny_model_dir, prompts_file, capsys):
    config = tiny_config(tiny_model_dir, prompts_file, set=[
        "data.eval_size=4", "schedule.eval_every=2", f"rewards.source={json.dumps(BINARY_AND_GRADED)}"])
    run_dir = train(config, tmp_path / "run", progress=False)
    assert read_status(run_dir)["state"] == "finished"
    evals = read_eval_metrics(run_dir)
    assert evals["step"].tolist() == [0, 2, 3]
    assert (evals["eval/rows"] == 4).all()
    for name in ("reward", "short", "shorter_is_better"):
        assert (evals[f"eval/{name}/low"] <= evals[f"eval/{name}"]).all()
        assert (evals[f"eval/{name}"] <= evals[f"eval/{name}/high"]).all()
    assert "held-out: reward" in (run_dir / "logs.txt").read_text()

    # The same evaluation from the command line, for the step-2 checkpoint: the same numbers.
    out = tmp_path / "step2.json"
    assert main(["eval", "run", str(run_dir), "--checkpoint", "step 2", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["rows"] == 4 and summary["checkpoint"] == "step 2"
    assert summary["reward"]["mean"] == pytest.approx(evals.loc[1, "eval/reward"], abs=1e-6)
    assert "short (pass rate)" in capsys.readouterr().out
    assert main(["eval", "run", str(run_dir), "--checkpoint", "step 7"]) == 2
    assert "not a checkpoint" in capsys.readouterr().err


def test_a_run_that_held_out_nothing_of_its_file_is_refused_with_the_reason(tmp_path, tiny_model_dir, prompts_file,
                                                                           capsys):
    run_dir = train(tiny_config(tiny_model_dir, prompts_file, set=["schedule.max_steps=1"]), tmp_path / "run",
                    progress=False)
    assert main(["eval", "run", str(run_dir)]) == 2
    assert "holds out no rows" in capsys.readouterr().err
