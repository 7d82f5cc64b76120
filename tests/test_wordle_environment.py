"""Wordle played whole: the game environment, the solver's games as demonstrations, the per-game rewards."""

from __future__ import annotations

import math

import pytest

from rft import presets
from rft.environments.runtime import EnvironmentRuntime
from rft.rewards import RewardRuntime
from rft.tasks.wordle import environment_source, game_reward_source
from rft.tasks.wordle.dataset import game_rows, held_out_game_rows, held_out_secrets
from rft.tasks.wordle.demonstrations import game_demonstration
from rft.tasks.wordle.environment import WordleGame


def row_for(secret: str) -> dict:
    return next(row for row in held_out_game_rows(200) if row["secret"] == secret)


def reply(word: str) -> str:
    return f" I guess.\n</think>\n<guess> {word} </guess>"


def test_the_game_answers_each_guess_with_the_course_feedback_and_ends_on_a_win():
    secret = held_out_secrets(1)[0]
    game = WordleGame()
    assert game.reset(row_for(secret)) is None
    answer = game.step(reply("crane" if secret != "CRANE" else "slate"))
    assert answer.startswith("Guess 1: ") and "→ Feedback: " in answer and answer.endswith("Make a new 5-letter word guess.")
    assert "Invalid guess: there is no <guess> block" in game.step("no guess here")
    assert "QQQQQ is not an allowed 5-letter word" in game.step(reply("qqqqq"))
    assert game.step(reply(secret.lower())) is None
    assert game.reward() == 1.0


def test_six_guesses_end_the_game_without_a_win():
    game = WordleGame()
    game.reset(row_for(held_out_secrets(1)[0]))
    answers = [game.step("nothing") for _ in range(6)]
    assert all(answers[:5]) and answers[5] is None and game.reward() == 0.0


def test_the_solver_game_is_a_won_conversation_the_environment_agrees_with():
    for row in game_rows(20):
        conversation = game_demonstration(row)
        replies = [m["content"] for m in conversation if m["role"] == "assistant"]
        assert 1 <= len(replies) <= 6 and conversation[-1]["role"] == "assistant"
        game = WordleGame()
        game.reset(row)
        answers = [game.step(text) for text in replies]
        assert answers[-1] is None and game.reward() == 1.0
        assert [a for a in answers[:-1]] == [m["content"] for m in conversation if m["role"] == "user"]


def test_per_game_rewards_score_a_solver_game_and_a_rambling_one():
    row = game_rows(1)[0]
    replies = [m["content"] for m in game_demonstration(row) if m["role"] == "assistant"]
    solver = dict(row, episode={"replies": replies, "turns": len(replies), "truncated": False})
    rambling = dict(row, episode={"replies": ["hmm", "still thinking"], "turns": 2, "truncated": True})
    with RewardRuntime(game_reward_source()) as rewards:
        scores = rewards.score(["", ""], [replies[-1], "still thinking"], [solver, rambling])
    per = scores.per_function
    assert per["guesses_used"] == [pytest.approx((7 - len(replies)) / 6), 0.0]
    assert per["format_per_turn"] == [1.0, 0.0]
    assert per["feedback_per_turn"][0] > 0 and per["feedback_per_turn"][1] == 0.0
    assert 0 < per["information_per_turn"][0] <= 1 and per["information_per_turn"][1] == 0.0


def test_the_environment_code_runs_in_the_worker_as_the_preset_ships_it():
    with EnvironmentRuntime(environment_source()) as runtime:
        secret = held_out_secrets(1)[0]
        episode, outcome = runtime.reset(row_for(secret))
        assert outcome.problem is None
        assert runtime.step(episode, reply(secret.lower())).value is None
        assert runtime.reward(episode).value == 1.0


def test_the_wordle_game_preset_is_valid_and_plays_games():
    config = presets.preset_config("wordle-game").validate()
    assert config.environment.enabled and config.data.preset == "wordle-game"
    assert not math.isnan(config.environment.reward_weight)


def test_a_game_plays_turn_by_turn_as_one_conversation(tmp_path, bundled_model_dir):
    import tiny_model

    from rft import models
    from rft.tasks.wordle.play import GameResult, play_conversation_turn

    model_dir = tiny_model.build_tiny_model(tmp_path / "model", bundled_model_dir, stop_every=10)
    model = models.load_base_model(models.ModelConfig(name_or_path=str(model_dir), device="cpu"))
    tokenizer = models.load_tokenizer(str(model_dir))
    game = GameResult(secret=held_out_secrets(1)[0])
    while game.num_guesses < 6:
        game.turns.append(play_conversation_turn(model, tokenizer, game, max_new_tokens=24))
    assert not game.won and all(turn.invalid for turn in game.turns)  # a random model writes no <guess> block
    assert "Make a new 5-letter word guess." in game.turns[0].prompt_text
    # Each turn was given the whole game so far: every earlier reply, each followed by the environment's answer.
    last = game.turns[-1].prompt_text
    assert last.startswith(game.turns[0].prompt_text)
    assert all(turn.completion in last for turn in game.turns[:-1])
    assert last.count("<|im_start|>user") == 6
    with pytest.raises(ValueError, match="is over"):
        play_conversation_turn(model, tokenizer, game, max_new_tokens=24)


def test_policies_of_environment_runs_are_known_as_such(tmp_path):
    from rft.config import RunConfig
    from rft.policies import trained_in_environment
    from rft.runs import RunWriter

    runs = tmp_path / "runs"
    RunWriter(runs / "game-run").create(presets.preset_config("wordle-game"))
    RunWriter(runs / "turn-run").create(RunConfig())
    assert trained_in_environment(runs, "game-run@3") and trained_in_environment(runs, "game-run@sft")
    assert not trained_in_environment(runs, "turn-run@3")
    assert not trained_in_environment(runs, "bundled:SmolLM2-135M-Instruct@model")
    assert not trained_in_environment(runs, "gone-run@1")
