"""A second task with a verifiable reward: integer arithmetic problems the project generates."""

from pathlib import Path

REWARDS_PATH = Path(__file__).resolve().parent / "rewards.py"
TOOL_REWARDS_PATH = Path(__file__).resolve().parent / "tool_rewards.py"
ENVIRONMENT_PATH = Path(__file__).resolve().parent / "environment.py"


def reward_source() -> str:
    """The task's reward code as text (rewards.py is the reward code itself, so it lives here)."""
    return REWARDS_PATH.read_text(encoding="utf-8")


def tool_reward_source() -> str:
    """The reward code of the calculator episodes (the arithmetic-tools preset)."""
    return TOOL_REWARDS_PATH.read_text(encoding="utf-8")


def environment_source() -> str:
    """The calculator environment's code (the arithmetic-tools preset's)."""
    return ENVIRONMENT_PATH.read_text(encoding="utf-8")
