"""Environment code: find its environment class, and run one instance per episode in a worker process.

An environment is a class the user writes (in the dashboard's editor, or a built-in one):

    class Game:
        def reset(self, example):   # the dataset row; returns text added to the first user message, or None
        def step(self, reply):      # the model's reply; returns the next message, or None when it is over
        def reward(self):           # optional: the episode's reward from the environment's state
                                    # (also after zero steps: a reply cut by the token limit is
                                    # not passed to step, it ends the episode as truncated)
        def lookup(self, word: str) -> str:   # optional tools: any other public method, with type hints
                                              # and a docstring, called by the model in its chat
                                              # template's tool format (TRL's convention)

It runs in the same kind of worker process as reward code (rft.rewards.worker), with the same
isolation: each call has a timeout, prints are captured, and a call that fails, hangs or returns
the wrong type fails its episode only. A worker that had to be killed takes every episode's
instance with it, so the runtime replays the other live episodes (reset, then each reply again)
in a fresh worker: environments should be deterministic given the example and the replies.
"""

from __future__ import annotations

import ast
import itertools
from dataclasses import dataclass

from rft.rewards.analysis import RewardCodeError, parse_reward_code
from rft.rewards.process import DEFAULT_MEMORY_LIMIT_MB, WorkerLost, WorkerProcess
from rft.rewards.worker import EpisodeOutcome, EpisodeRequest

REWARD_METHODS = ("reward", "get_reward")  # get_reward: TRL's name
LIFE_CYCLE_METHODS = ("reset", "step", *REWARD_METHODS)
ENVIRONMENT_REWARD = "environment"  # the name the environment's own reward is scored and charted under
API_HELP = ("define a class with reset(self, example) and step(self, reply) methods (and optionally "
            "reward(self), and tools: other public methods); see the README's 'Environments' section")


# The Train tab's starting point: a complete environment to edit (GRPO compares the G episodes of a
# row, so the secret comes from the row, not from a random draw).
TEMPLATE = '''import re


class GuessTheNumber:
    """The model guesses a number from 1 to 100; the environment answers higher or lower."""

    def reset(self, example):
        # Called once per episode with the dataset row; the same row must start the same game.
        self.secret = sum(map(ord, str(example.get("prompt", example)))) % 100 + 1
        self.found = False
        return "Guess the number from 1 to 100: reply with the number only. I will say higher or lower."

    def step(self, reply):
        # Called after every reply: the next user message, or None to end the episode.
        guess = re.search(r"\\d+", reply)
        if guess is None:
            return "That was not a number. Reply with a number from 1 to 100."
        if int(guess.group()) == self.secret:
            self.found = True
            return None
        return "Higher." if int(guess.group()) < self.secret else "Lower."

    def reward(self):
        # Optional: the episode's reward from the environment's state, scored as "environment".
        return 1.0 if self.found else 0.0
'''


class EnvironmentCodeError(ValueError):
    """Environment code that cannot be used; the message says why, in UI words."""


@dataclass(frozen=True)
class EnvironmentInfo:
    class_name: str
    has_reward: bool
    line: int
    summary: str
    tools: tuple[str, ...] = ()  # public methods besides the life cycle's, which the model may call
    has_step: bool = True  # without step, a reply that calls no tool ends the episode

    def describe(self) -> str:
        reward = "its own reward()" if self.has_reward else "no reward() of its own"
        tools = f", tools {', '.join(self.tools)}" if self.tools else ""
        text = f"environment {self.class_name} (line {self.line}, {reward}{tools})"
        return f"{text}: {self.summary}" if self.summary else text


def analyse_environment(source: str, class_name: str | None = None) -> EnvironmentInfo:
    """The environment class `source` defines (the one named `class_name` when it defines several)."""
    try:
        tree = parse_reward_code(source)
    except RewardCodeError as exc:
        raise EnvironmentCodeError(str(exc)) from None
    found = []
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            methods = [item.name for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef))]
            tools = tuple(name for name in methods if not name.startswith("_") and name not in LIFE_CYCLE_METHODS)
            if "reset" in methods and ("step" in methods or tools):
                summary = (ast.get_docstring(node) or "").strip().splitlines()
                found.append(EnvironmentInfo(node.name, any(name in methods for name in REWARD_METHODS), node.lineno,
                                             summary[0] if summary else "", tools, "step" in methods))
    if class_name:
        chosen = [info for info in found if info.class_name == class_name]
        if not chosen:
            names = ", ".join(info.class_name for info in found) or "none"
            raise EnvironmentCodeError(f"environment.class_name: no class {class_name!r} with reset and step (or "
                                       f"tool) methods (found: {names})")
        return chosen[0]
    if not found:
        raise EnvironmentCodeError(f"no environment class found: {API_HELP}")
    if len(found) > 1:
        raise EnvironmentCodeError(f"several environment classes ({', '.join(i.class_name for i in found)}); "
                                   "name the one to use in environment.class_name")
    return found[0]


def check(source: str, class_name: str | None = None, timeout_s: float = 10.0) -> tuple[EnvironmentInfo | None, str]:
    """The environment class and a message; None and the problem when the code is unusable (it runs, in a worker)."""
    try:
        info = analyse_environment(source, class_name)
        WorkerProcess(source, timeout_s).close()
    except (EnvironmentCodeError, RewardCodeError) as exc:
        return None, f"problem: {exc}"
    return info, f"found {info.describe()}"


class EnvironmentRuntime:
    """Episodes of one environment class, each an instance living in a worker process.

    Every call returns an EpisodeOutcome and never raises for the user's code: a failed episode
    has a `problem`, and later calls on it return that problem at once.
    """

    def __init__(self, source: str, class_name: str | None = None, timeout_s: float = 10.0,
                 memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB):
        self.info = analyse_environment(source, class_name)
        self.timeout_s = timeout_s
        self._source = source
        self._memory_limit_mb = memory_limit_mb
        try:
            self._worker: WorkerProcess | None = WorkerProcess(source, timeout_s, memory_limit_mb)
        except RewardCodeError as exc:
            raise EnvironmentCodeError(str(exc)) from None
        self._ids = itertools.count()
        # episode: (example, its calls so far as (action, argument)), to replay in a fresh worker
        self._live: dict[int, tuple[dict, list[tuple[str, object]]]] = {}
        self._failed: dict[int, str] = {}
        self.tool_schemas: list[dict] = []
        if self.info.tools:
            described = self._worker.call(EpisodeRequest("describe", -1, self.info.class_name), timeout_s)
            if described.problem:
                self.close()
                raise EnvironmentCodeError(f"the tools of {self.info.class_name} cannot be described for the chat "
                                           f"template (each needs type hints and a docstring with an Args section): "
                                           f"{described.problem.strip().splitlines()[-1]}")
            self.tool_schemas = described.value

    @property
    def has_reward(self) -> bool:
        return self.info.has_reward

    def reset(self, example: dict) -> tuple[int, EpisodeOutcome]:
        """A new episode: its id, and what reset returned."""
        episode = next(self._ids)
        outcome = self._call(EpisodeRequest("reset", episode, (self.info.class_name, example)))
        if not outcome.problem:
            self._live[episode] = (example, [])
        return episode, outcome

    def step(self, episode: int, reply: str) -> EpisodeOutcome:
        outcome = self._call(EpisodeRequest("step", episode, reply))
        if episode in self._live:
            self._live[episode][1].append(("step", reply))
        return outcome

    def call_tool(self, episode: int, name: str, arguments: dict) -> EpisodeOutcome:
        """A tool call the model made: its result as text (an error in it is the result, for the model)."""
        outcome = self._call(EpisodeRequest("tool", episode, (name, arguments)))
        if episode in self._live:
            self._live[episode][1].append(("tool", (name, arguments)))
        return outcome

    def reward(self, episode: int) -> EpisodeOutcome:
        return self._call(EpisodeRequest("reward", episode))

    def close_episode(self, episode: int) -> None:
        self._live.pop(episode, None)
        self._failed.pop(episode, None)
        if self._worker is not None:
            self._call(EpisodeRequest("close", episode))

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self) -> EnvironmentRuntime:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _call(self, request: EpisodeRequest) -> EpisodeOutcome:
        if request.episode in self._failed:
            return EpisodeOutcome(None, self._failed[request.episode])
        try:
            outcome = self._ensure_worker().call(request, self.timeout_s)
        except WorkerLost as lost:
            outcome = EpisodeOutcome(None, f"{lost}; a new worker took over")
            self._worker = None
        if outcome.problem:
            self._fail(request.episode, outcome.problem)
        return outcome

    def _fail(self, episode: int, problem: str) -> None:
        self._failed[episode] = problem
        self._live.pop(episode, None)

    def _ensure_worker(self) -> WorkerProcess:
        """The worker; a fresh one has every live episode replayed into it first."""
        while self._worker is None:
            try:
                self._worker = WorkerProcess(self._source, self.timeout_s, self._memory_limit_mb)
            except RewardCodeError as exc:
                raise EnvironmentCodeError(f"a new worker could no longer run the environment code: {exc}") from None
            if not self._replay_live_episodes():
                self._worker = None  # a replay killed it: that episode failed; replay the rest afresh
        return self._worker

    def _replay_live_episodes(self) -> bool:
        """Reset each live episode and make its calls again; False when a call lost the worker."""
        for episode, (example, calls) in list(self._live.items()):
            requests = [EpisodeRequest("reset", episode, (self.info.class_name, example))]
            requests += [EpisodeRequest(action, episode, argument) for action, argument in calls]
            for request in requests:
                try:
                    outcome = self._worker.call(request, self.timeout_s)
                except WorkerLost as lost:
                    self._fail(episode, f"replaying it in a new worker: {lost}")
                    return False
                if outcome.problem:
                    self._fail(episode, f"replaying it in a new worker: {outcome.problem}")
                    break
        return True
