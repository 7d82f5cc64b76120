"""The course prompt and the generated Wordle training set."""

import ast
import json
from pathlib import Path

import pytest

from rft.tasks.wordle.dataset import held_out_secrets, training_rows, training_secrets, write_jsonl
from rft.tasks.wordle.game import answer_words, feedback
from rft.tasks.wordle.prompts import SYSTEM_PROMPT, build_messages
from rft.tasks.wordle.rewards import guess_value, output_format_check, uses_previous_feedback


@pytest.fixture(scope="module")
def rows():
    return training_rows(num_secrets=40, seed=3)


def test_messages_follow_the_course_format():
    history = [["STORM", "S(-) T(x) O(x) R(-) M(x)"], ["BRAVE", "B(✓) R(✓) A(x) V(x) E(x)"]]
    system, user, assistant = build_messages(history)
    assert system == {"role": "system", "content": SYSTEM_PROMPT}
    assert "6 tries" in SYSTEM_PROMPT and "Guess 1: STORM → Feedback: S(-) T(x) O(x) R(-) M(x)" in SYSTEM_PROMPT
    assert "<guess> guessed-word </guess>" in SYSTEM_PROMPT
    assert user == {
        "role": "user",
        "content": "Make a new 5-letter word guess.\n\nHere is some previous feedback:\n"
        "Guess 1: STORM → Feedback: S(-) T(x) O(x) R(-) M(x)\n"
        "Guess 2: BRAVE → Feedback: B(✓) R(✓) A(x) V(x) E(x)",
    }
    assert assistant == {"role": "assistant", "content": "Let me solve this step by step.\n<think>"}
    assert build_messages([])[1]["content"] == "Make a new 5-letter word guess."


def test_rows_have_the_course_columns_and_consistent_histories(rows):
    assert len(rows) > 40 * 5
    for row in rows:
        assert set(row) == {"prompt", "secret", "past_guess_history", "word_list"}
        assert all(isinstance(row[column], str) for column in ("secret", "past_guess_history", "word_list"))
        history = ast.literal_eval(row["past_guess_history"])
        assert 0 <= len(history) <= 5
        assert row["prompt"] == build_messages(history)
        assert all(shown == feedback(guess, row["secret"]) for guess, shown in history)
        assert all(guess != row["secret"] for guess, _ in history)  # no row after the game is won
        assert Path(row["word_list"]).is_absolute() and Path(row["word_list"]).is_file()
    assert {len(ast.literal_eval(row["past_guess_history"])) for row in rows} == {0, 1, 2, 3, 4, 5}


def test_rows_are_deterministic_for_a_seed(rows):
    assert training_rows(num_secrets=40, seed=3) == rows
    assert training_rows(num_secrets=40, seed=4) != rows


def test_the_secret_itself_scores_well_on_every_row(rows):
    for row in rows:
        example = {key: value for key, value in row.items() if key != "prompt"}
        completion = f" I have enough clues.</think>\n<guess> {row['secret']} </guess>"
        assert output_format_check(row["prompt"], completion, example) == 1.0
        # Feedback never rules out the secret's own letters, so no rule takes anything away.
        expected_minimum = 0.1 if row["past_guess_history"] == "[]" else 5 * 0.05
        assert uses_previous_feedback(row["prompt"], completion, example) >= expected_minimum
        assert 0.0 <= guess_value(row["prompt"], completion, example) <= 1.0


def test_held_out_secrets_are_fixed_answers_never_used_for_training(rows):
    held_out = held_out_secrets()
    assert len(held_out) == len(set(held_out)) == 200
    assert set(held_out) <= set(answer_words())
    assert held_out_secrets(10) == held_out[:10]
    every_training_secret = training_secrets(len(answer_words()) - 200)
    assert set(every_training_secret) == set(answer_words()) - set(held_out)
    assert not {row["secret"] for row in rows} & set(held_out)


def test_write_jsonl_round_trips(rows, tmp_path):
    path = tmp_path / "wordle.jsonl"
    write_jsonl(rows[:20], path)
    assert [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] == rows[:20]
