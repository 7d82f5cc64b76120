"""The reward runtime: check reward code, score completions with it in a worker process, and the
built-in library of reward functions the dashboard's preset menu inserts into the code box."""

from rft.rewards.analysis import CheckResult, RewardCodeError, RewardFunctionInfo, missing_example_keys
from rft.rewards.library import LIBRARY, library_source
from rft.rewards.runtime import FunctionErrors, RewardRuntime, ScoreResult, check, preview

__all__ = [
    "LIBRARY",
    "CheckResult",
    "FunctionErrors",
    "RewardCodeError",
    "RewardFunctionInfo",
    "RewardRuntime",
    "ScoreResult",
    "check",
    "library_source",
    "missing_example_keys",
    "preview",
]
