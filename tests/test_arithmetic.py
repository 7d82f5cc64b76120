"""The arithmetic task: generated problems, worked answers, rewards, and the evaluator."""

import gzip
import json
import random

import pytest

from rft.tasks.arithmetic.evaluate import evaluate, evaluation_problems, format_report, main
from rft.tasks.arithmetic.problems import (
    demonstration,
    held_out_problems,
    make_row,
    random_expression,
    training_rows,
    worked_steps,
)
from rft.tasks.arithmetic.rewards import answer_format, correct_answer, format_progress
from rft.models import load_for_inference


@pytest.mark.parametrize("expression, steps, value", [
    ("37 + 18 * 4", ["18 * 4 = 72", "37 + 72 = 109"], 109),
    ("5 - 9 - 3", ["5 - 9 = -4", "-4 - 3 = -7"], -7),
    ("12 * 3 * 2", ["12 * 3 = 36", "36 * 2 = 72"], 72),
    ("6 * 7 - 40", ["6 * 7 = 42", "42 - 40 = 2"], 2),
])
def test_worked_steps_do_multiplication_first(expression, steps, value):
    assert worked_steps(expression) == (steps, value)
    assert value == eval(expression)  # the expressions are Python's arithmetic, too


def test_rows_are_distinct_reproducible_and_never_held_out():
    rows = training_rows(300, seed=1)
    expressions = [row["expression"] for row in rows]
    assert len(set(expressions)) == 300
    assert not set(expressions) & set(held_out_problems())
    assert rows == training_rows(300, seed=1)
    assert all(row["answer"] == eval(row["expression"]) for row in rows)
    assert rows[0]["prompt"][-1] == {"role": "assistant", "content": "<think>"}
    assert held_out_problems(3) == held_out_problems()[:3] and len(held_out_problems()) == 1000


def test_expressions_have_two_or_three_numbers():
    rng = random.Random(0)
    sizes = {len(random_expression(rng).split()) for _ in range(200)}
    assert sizes == {3, 5}


def test_demonstrations_score_full_marks():
    for row in training_rows(100, seed=2):
        completion = demonstration(row["expression"])
        assert answer_format(row["prompt"], completion, row) == 1.0
        assert correct_answer(row["prompt"], completion, row) == 1.0


@pytest.mark.parametrize("completion, fmt, correct", [
    (" 18 * 4 = 72. 37 + 72 = 109.\n</think>\n<answer>109</answer>", 1.0, 1.0),
    (" easy\n</think>\n<answer> 108 </answer>", 1.0, 0.0),
    (" easy</think>\n<answer>109</answer> done", 0.5, 1.0),  # text after the answer
    (" easy</think><answer>109</answer>", 0.5, 1.0),  # no newline between the blocks
    (" 109", 0.0, 0.0),
    (" easy</think>\n<answer>about 109</answer>", 0.0, 0.0),
])
def test_rewards_on_hand_written_answers(completion, fmt, correct):
    example = {"expression": "37 + 18 * 4", "answer": "109"}  # columns may arrive as text
    assert answer_format(None, completion, example) == fmt
    assert correct_answer(None, completion, example) == correct


@pytest.mark.parametrize("completion, progress", [
    (" 18 * 4 = 72. 37 + 72 = 109.\n</think>\n<answer>109</answer>", 1.0),
    (" 50 - 10 = 30\n<answer> 30", 0.5),  # what the base model writes at best: no </think>, no closing tag
    (" 50 - 10 = 40", 0.0),
    (" fine</think> 40", 0.25),
    (" fine</think><answer>forty</answer>", 0.5),
    ("<answer>40</answer>", 0.75),
])
def test_format_progress_pays_each_part_of_the_format(completion, progress):
    assert format_progress(None, completion, {"answer": "40"}) == progress


def test_the_reward_file_runs_on_its_own_in_the_reward_runtime():
    from rft import rewards
    from rft.tasks.arithmetic import reward_source

    check = rewards.check(reward_source())
    assert check.ok and set(check.function_names) == {"answer_format", "format_progress", "correct_answer"}


def test_the_presets_weigh_format_progress_only_without_the_warm_start():
    from rft.presets import preset_config

    with_sft, zero = preset_config("arithmetic"), preset_config("arithmetic-zero")
    assert with_sft.sft.enabled and with_sft.rewards.weights == {"format_progress": 0.0}
    assert not zero.sft.enabled and zero.rewards.weights == {"format_progress": 1.0}
    zero.validate()


def test_evaluation_problems_are_held_out_and_seeded():
    assert evaluation_problems(5, seed=4) == evaluation_problems(5, seed=4)
    assert set(evaluation_problems(20, seed=0)) <= set(held_out_problems())
    with pytest.raises(ValueError):
        evaluation_problems(0, seed=0)


def test_the_evaluator_scores_a_model_and_writes_json(tiny_model_dir, tmp_path, capsys):
    model, tokenizer = load_for_inference(str(tiny_model_dir), device="cpu")
    summary = evaluate(model, tokenizer, evaluation_problems(3, seed=0), max_new_tokens=6, batch_size=2)
    assert summary["problems"] == 3 and len(summary["details"]) == 3
    assert 0 <= summary["correct"] <= 3
    assert set(summary["mean_rewards"]) == {"answer_format", "correct_answer"}
    assert "accuracy" in format_report(summary)

    out = tmp_path / "eval.json"
    assert main(["--model", str(tiny_model_dir), "--problems", "2", "--max-new-tokens", "4", "--out", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["problems"] == 2 and record["details"][0]["answer"] == eval(record["details"][0]["expression"])
    assert "problems solved" in capsys.readouterr().out


def test_sampled_evaluation_reports_pass_at_k_and_the_files_compare(tiny_model_dir, tmp_path, capsys):
    from rft.__main__ import main as rft_main

    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    for out in outs:
        assert main(["--model", str(tiny_model_dir), "--problems", "3", "--max-new-tokens", "4", "--samples", "4",
                     "--temperature", "1.0", "--out", str(out)]) == 0
    record = json.loads(outs[0].read_text())
    sampled = record["sampled"]
    assert list(sampled["pass_at"]) == ["1", "2", "4"] and len(sampled["correct_samples"]) == 3
    assert all(0 <= c <= 4 for c in sampled["correct_samples"])
    assert sampled["pass_at"]["1"] <= sampled["pass_at"]["2"] <= sampled["pass_at"]["4"]
    assert record["accuracy_interval"][0] <= record["accuracy"] <= record["accuracy_interval"][1]
    assert "pass@4 (T=1)" in capsys.readouterr().out

    assert rft_main(["eval-diff", *map(str, outs)]) == 0
    table = capsys.readouterr().out
    assert "| b | base model | accuracy |" in table and "+0.0%" in table  # same model, same problems
    zipped = tmp_path / "b.json.gz"
    zipped.write_bytes(gzip.compress(outs[1].read_bytes()))
    assert rft_main(["eval-diff", str(outs[0]), str(zipped)]) == 0
    assert capsys.readouterr().out == table

    other = tmp_path / "other.json"
    assert main(["--model", str(tiny_model_dir), "--problems", "3", "--seed", "1", "--max-new-tokens", "2",
                 "--out", str(other)]) == 0
    assert rft_main(["eval-diff", str(outs[0]), str(other)]) == 2
    assert "other problems" in capsys.readouterr().err


def test_the_report_for_a_perfect_model():
    summary = {"problems": 2, "correct": 2, "accuracy": 1.0, "format_pass_rate": 1.0,
               "mean_rewards": {"answer_format": 1.0, "correct_answer": 1.0}}
    report = format_report(summary)
    lines = {line.split("  ")[0]: line.split() for line in report.splitlines()[1:]}
    assert lines["problems solved"][-1] == "2/2"
    assert lines["accuracy"][-2:] == ["100.0%", "100.0%"]
