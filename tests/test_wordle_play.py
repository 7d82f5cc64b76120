"""A model plays Wordle and is evaluated, on the tiny random Llama from conftest.py.

The tiny model writes noise, so these tests check the shape of games and reports, not skill.
"""

import json

import pytest

from rft.models import load_for_inference
from rft.tasks.wordle.evaluate import evaluate, evaluation_secrets, main
from rft.tasks.wordle.play import play_games, play_turn
from rft.tasks.wordle.prompts import ASSISTANT_PREFIX

REWARD_NAMES = {"output_format_check", "uses_previous_feedback", "guess_value", "fits_feedback"}


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    return load_for_inference(str(tiny_model_dir), device="cpu")


def test_a_game_lasts_six_turns_or_ends_with_a_win(tiny_model):
    model, tokenizer = tiny_model
    [result] = play_games(model, tokenizer, ["crane"], max_new_tokens=8)
    assert result.secret == "CRANE"
    assert result.won or result.num_guesses == 6
    assert 1 <= result.num_guesses == len(result.turns) <= 6
    for turn in result.turns:
        assert turn.prompt_text.rstrip().endswith(ASSISTANT_PREFIX)
        assert isinstance(turn.completion, str)
        assert turn.guess is None or turn.guess == turn.guess.upper()
        assert turn.invalid == (turn.feedback is None)
        assert set(turn.rewards) == REWARD_NAMES
        assert all(isinstance(value, float) for value in turn.rewards.values())
    summary = result.to_dict()
    assert summary["num_guesses"] == result.num_guesses and len(summary["turns"]) == result.num_guesses
    assert set(summary["turns"][0]) == {"prompt_text", "completion", "guess", "feedback", "rewards", "invalid"}


def test_batched_games_play_as_they_would_one_at_a_time(tiny_model):
    model, tokenizer = tiny_model
    secrets = ["crane", "slate", "pious"]
    ended = []
    together = play_games(model, tokenizer, secrets, max_new_tokens=6, batch_size=2,
                          on_game_played=lambda index, result: ended.append(index))
    assert sorted(ended) == [0, 1, 2]
    for secret, game in zip(secrets, together):
        [alone] = play_games(model, tokenizer, [secret], max_new_tokens=6)
        assert [turn.completion for turn in game.turns] == [turn.completion for turn in alone.turns]


def test_a_turn_shows_the_history_in_its_prompt(tiny_model):
    model, tokenizer = tiny_model
    history = [("RAISE", "R(x) A(-) I(x) S(x) E(-)")]
    turn = play_turn(model, tokenizer, "CRANE", history, max_new_tokens=4, temperature=1.0)
    assert "Guess 1: RAISE → Feedback: R(x) A(-) I(x) S(x) E(-)" in turn.prompt_text


def test_evaluate_reports_rates_rewards_and_the_solver(tiny_model):
    model, tokenizer = tiny_model
    secrets = evaluation_secrets(2, seed=0)
    played = []
    summary = evaluate(model, tokenizer, secrets, max_new_tokens=4, on_game_played=lambda i, r: played.append(i))
    assert sorted(played) == [0, 1]
    assert summary["games"] == 2 and 0 <= summary["wins"] <= 2
    for rate in ("win_rate", "valid_guess_rate", "format_pass_rate"):
        assert 0.0 <= summary[rate] <= 1.0
    assert set(summary["mean_rewards"]) == REWARD_NAMES
    assert summary["solver"]["win_rate"] == 1.0 and 1 <= summary["solver"]["mean_guesses_won"] <= 6
    assert [game["secret"] for game in summary["details"]] == secrets
    turns = [turn for game in summary["details"] for turn in game["turns"]]
    assert summary["valid_guess_rate"] == pytest.approx(sum(not turn["invalid"] for turn in turns) / len(turns))
    well_formed = [turn["rewards"]["output_format_check"] > 0 for turn in turns]
    assert summary["format_pass_rate"] == pytest.approx(sum(well_formed) / len(turns))


def test_cli_prints_a_table_and_saves_json(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main(["--model", str(tiny_model_dir), "--games", "1", "--seed", "5", "--max-new-tokens", "4",
                 "--device", "cpu", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "win rate" in printed and "solver" in printed
    saved = json.loads(out.read_text(encoding="utf-8"))
    assert saved["model"] == str(tiny_model_dir) and saved["games"] == 1
    assert saved["details"][0]["secret"] == evaluation_secrets(1, seed=5)[0]


def test_cli_refuses_more_games_than_held_out_secrets(capsys):
    assert main(["--games", "500"]) == 2
    assert "between 1 and 200" in capsys.readouterr().err
