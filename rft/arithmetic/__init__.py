"""A second task with a verifiable reward: integer arithmetic problems the project generates."""

from pathlib import Path

REWARDS_PATH = Path(__file__).resolve().parent / "rewards.py"


def reward_source() -> str:
    """The task's reward code as text (rewards.py is the reward code itself, so it lives here)."""
    return REWARDS_PATH.read_text(encoding="utf-8")
