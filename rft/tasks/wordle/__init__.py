"""Wordle, the flagship example: the game and solver, the course prompt and rewards, data, play, evaluation."""

from pathlib import Path

REWARDS_PATH = Path(__file__).resolve().parent / "rewards.py"
GAME_REWARDS_PATH = Path(__file__).resolve().parent / "episode_rewards.py"
ENVIRONMENT_PATH = Path(__file__).resolve().parent / "environment.py"


def reward_source() -> str:
    """The course's reward code as text: the reward editor's default and the Wordle preset's.

    It lives here, not in rewards.py, because that file is the reward code itself: every public
    function in it must be a reward function.
    """
    return REWARDS_PATH.read_text(encoding="utf-8")


def game_reward_source() -> str:
    """The reward code of whole games (the wordle-game preset)."""
    return GAME_REWARDS_PATH.read_text(encoding="utf-8")


def environment_source() -> str:
    """The Wordle game as environment code (the wordle-game preset's)."""
    return ENVIRONMENT_PATH.read_text(encoding="utf-8")
