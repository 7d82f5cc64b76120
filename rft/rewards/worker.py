"""The worker: the only process that ever runs the user's reward or environment code.

The trainer and the dashboard start it as a fresh interpreter (see process.py) that imports this
light package, never torch. It runs the code once as a module, then answers one request at a time
from its main thread, so user code may use signal.alarm. Everything it sends back is plain data:
scores or environment messages, why one is missing, and what the call printed.

Conversation on the connection: the worker says ("started",); the trainer sends (source,
memory_limit_bytes); the worker runs the code and says ("loaded",) or ("load_failed", message);
then one CallOutcome answers each CallRequest (a reward function), and one EpisodeOutcome each
EpisodeRequest (an environment's episode, rft.environments), until the trainer hangs up.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import linecache
import math
import numbers
import os
import reprlib
import resource
import signal
import sys
import threading
import time
import traceback
import types
from dataclasses import dataclass
from multiprocessing.connection import Connection

REWARD_CODE_FILENAME = "<reward code>"
REWARD_MODULE_NAME = "reward_code"
OUTPUT_LIMIT_CHARS = 64 * 1024
PARENT_CHECK_INTERVAL_S = 1.0


@dataclass
class CallRequest:
    function_name: str
    args: tuple
    kwargs: dict
    batch_size: int | None  # None: one completion, one number back; N: a list of N numbers back


@dataclass
class CallOutcome:
    scores: list[float]  # one per completion the call covered, NaN where missing
    problems: list[str | None]  # why each score is missing; None when present or not applicable
    output: str = ""  # what the call printed, bounded

    @classmethod
    def failed(cls, count: int, problem: str, output: str = "") -> CallOutcome:
        return cls([math.nan] * count, [problem] * count, output)


@dataclass
class EpisodeRequest:
    """One call on one episode's environment instance, which lives in the worker between calls.

    action "reset": argument is (class name, example): a new instance, then its reset(example);
    "step": argument is the model's reply; "tool": argument is (method name, arguments), a tool call
    the model made, whose error is the call's result rather than the episode's failure; "reward": the
    instance's reward(); "close": forget it; "describe": argument is the class name, the value its
    tools' JSON schemas (an instance's public methods besides the life cycle's).
    """

    action: str
    episode: int
    argument: object = None


@dataclass
class EpisodeOutcome:
    value: object  # reset: text or None; step: a message dict or None (the episode is over); reward: float
    problem: str | None = None  # why the call failed: the episode is scored as missing
    output: str = ""  # what the call printed, bounded


def main() -> None:
    """Entry point of the worker process; its one argument is the file descriptor of its pipe end."""
    serve(Connection(int(sys.argv[1])))


def serve(connection: Connection) -> None:
    """The worker's whole life: run the code once, then answer calls until the trainer hangs up."""
    # Ctrl+C in a terminal reaches the whole process group; the trainer decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_when_parent_dies(os.getppid())
    connection.send(("started",))
    source, memory_limit_bytes = connection.recv()
    if memory_limit_bytes is not None:
        _limit_address_space(memory_limit_bytes)
    try:
        module = _run_reward_code(source)
    except BaseException as exc:  # SystemExit at the top level is a load failure too
        connection.send(("load_failed", _describe_load_failure(exc)))
        return
    connection.send(("loaded",))
    episodes: dict[int, object] = {}
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        if isinstance(request, EpisodeRequest):
            connection.send(_run_episode_call(module, episodes, request))
        else:
            connection.send(_run_call(module, request))


def _run_reward_code(source: str) -> types.ModuleType:
    # Registered like an imported module, so dataclasses, pickling and inspect work in user code,
    # and tracebacks show the user's lines.
    linecache.cache[REWARD_CODE_FILENAME] = (len(source), None, source.splitlines(True), REWARD_CODE_FILENAME)
    module = types.ModuleType(REWARD_MODULE_NAME)
    sys.modules[REWARD_MODULE_NAME] = module
    exec(compile(source, REWARD_CODE_FILENAME, "exec", dont_inherit=True), module.__dict__)
    return module


def _run_call(module: types.ModuleType, request: CallRequest) -> CallOutcome:
    count = request.batch_size or 1
    function = getattr(module, request.function_name, None)
    if not callable(function):
        return CallOutcome.failed(count, f"{request.function_name} is not a function once the code has run")
    output = BoundedOutput(OUTPUT_LIMIT_CHARS)
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            value = function(*request.args, **request.kwargs)
    except BaseException as exc:  # sys.exit() in a reward function fails that call, not the worker
        return CallOutcome.failed(count, _user_traceback(exc), output.text())
    finally:
        # An alarm the call set but did not cancel would otherwise go off between calls.
        signal.alarm(0)
    if request.batch_size is None:
        score, problem = score_from_value(value)
        return CallOutcome([score], [problem], output.text())
    scores, problems = scores_from_list(value, request.batch_size)
    return CallOutcome(scores, problems, output.text())


LIFE_CYCLE_METHODS = ("reset", "step", "reward", "get_reward")


def _run_episode_call(module: types.ModuleType, episodes: dict[int, object], request: EpisodeRequest) -> EpisodeOutcome:
    if request.action == "close":
        episodes.pop(request.episode, None)
        return EpisodeOutcome(None)
    if request.action == "tool":
        return _run_tool_call(episodes[request.episode], *request.argument)
    output = BoundedOutput(OUTPUT_LIMIT_CHARS)
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            if request.action == "describe":
                value = _tool_schemas(getattr(module, request.argument))
            elif request.action == "reset":
                class_name, example = request.argument
                environment = getattr(module, class_name)()
                episodes[request.episode] = environment
                value = _call_reset(environment.reset, example)
            else:
                environment = episodes[request.episode]
                if request.action == "step":
                    value = environment.step(request.argument)
                else:  # reward(), or get_reward() as TRL names it
                    value = (environment.reward if hasattr(environment, "reward") else environment.get_reward)()
    except BaseException as exc:  # an environment's sys.exit() fails its episode, not the worker
        return EpisodeOutcome(None, _user_traceback(exc), output.text())
    finally:
        signal.alarm(0)
    value, problem = EPISODE_VALUE_CHECKS[request.action](value)
    return EpisodeOutcome(value, problem, output.text())


def _tool_methods(environment_class) -> list[str]:
    return [name for name, member in vars(environment_class).items()
            if callable(member) and not name.startswith("_") and name not in LIFE_CYCLE_METHODS]


def _tool_schemas(environment_class) -> list[dict]:
    """The JSON schema of each tool, as chat templates take them, from its type hints and docstring."""
    names = _tool_methods(environment_class)
    if not names:
        return []
    from transformers.utils.chat_template_utils import get_json_schema  # light: no torch

    instance = environment_class()
    return [get_json_schema(getattr(instance, name)) for name in names]


def _run_tool_call(environment, name: str, arguments: dict) -> EpisodeOutcome:
    """The tool's result as text; a call the model got wrong (an unknown tool, bad arguments, an error
    inside) answers with the error, for the model to read, and the episode goes on."""
    output = BoundedOutput(OUTPUT_LIMIT_CHARS)
    if name not in _tool_methods(type(environment)):
        tools = ", ".join(_tool_methods(type(environment)))
        return EpisodeOutcome(f"error: there is no tool {name!r}; the tools are {tools}")
    try:
        with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
            value = getattr(environment, name)(**(arguments or {}))
    except Exception as exc:
        return EpisodeOutcome(f"error: {type(exc).__name__}: {exc}", None, output.text())
    finally:
        signal.alarm(0)
    return EpisodeOutcome(value if isinstance(value, str) else json.dumps(value, default=str), None, output.text())


def _call_reset(reset, example: dict):
    """reset(example), or TRL's reset(**columns) when reset takes no positional argument."""
    parameters = inspect.signature(reset).parameters.values()
    if any(p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters):
        return reset(example)
    if any(p.kind == p.VAR_KEYWORD for p in parameters):
        return reset(**example)
    return reset()


def _reset_value(value) -> tuple[str | None, str | None]:
    if value is None or isinstance(value, str):
        return value, None
    return None, f"reset returned {_describe_value(value)}; return text to add to the first user message, or None"


def _step_value(value) -> tuple[dict | None, str | None]:
    if value is None:
        return None, None
    if isinstance(value, str):
        return {"role": "user", "content": value}, None
    if isinstance(value, dict) and isinstance(value.get("content"), str) and value.get("role") in ("user", "tool"):
        return {"role": value["role"], "content": value["content"]}, None
    return None, (f"step returned {_describe_value(value)}; return the next message as text, as "
                  "{'role': 'user' or 'tool', 'content': text}, or None when the episode is over")


def score_from_value(value) -> tuple[float, str | None]:
    """(score, problem) for one returned value; NaN without a problem means not applicable."""
    if value is None:
        return math.nan, None
    # bool is an int subclass, but True as a reward is almost always a missing float().
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return math.nan, f"returned {_describe_value(value)}; a reward must be an int, a float or None"
    try:
        score = float(value)
    except OverflowError:
        return math.nan, f"returned {_describe_value(value)}; too large for a float"
    if math.isinf(score):
        return math.nan, f"returned {score}; a reward must be finite"
    return score, None


def scores_from_list(value, expected_length: int) -> tuple[list[float], list[str | None]]:
    """Per-completion scores and problems for what a batched function returned."""
    if not isinstance(value, (list, tuple)):
        problem = (f"returned {_describe_value(value)}; a batched reward function must return a list "
                   f"of {expected_length} rewards, one per completion")
        return [math.nan] * expected_length, [problem] * expected_length
    if len(value) != expected_length:
        problem = f"returned a list of {len(value)} rewards for {expected_length} completions"
        return [math.nan] * expected_length, [problem] * expected_length
    scores, problems = [], []
    for index, item in enumerate(value):
        score, problem = score_from_value(item)
        scores.append(score)
        problems.append(f"completion {index}: {problem}" if problem else None)
    return scores, problems


def _schemas_value(schemas: list[dict]) -> tuple[list[dict], None]:
    return schemas, None


EPISODE_VALUE_CHECKS = {"reset": _reset_value, "step": _step_value, "reward": score_from_value,
                        "describe": _schemas_value}


class BoundedOutput(io.StringIO):
    """Captures prints up to a limit, so a print in a loop cannot flood the logs or the pipe."""

    def __init__(self, limit_chars: int):
        super().__init__()
        self.limit_chars = limit_chars
        self.dropped_chars = 0

    def write(self, text: str) -> int:
        room = max(self.limit_chars - self.tell(), 0)
        if len(text) > room:
            self.dropped_chars += len(text) - room
            super().write(text[:room])
        else:
            super().write(text)
        return len(text)

    def text(self) -> str:
        kept = self.getvalue()
        if self.dropped_chars:
            kept += f"\n[output truncated: {self.dropped_chars} more characters were printed]"
        return kept


def _describe_value(value) -> str:
    return f"{type(value).__name__} {reprlib.repr(value)}"


def _user_traceback(exc: BaseException) -> str:
    # The first frame is _run_call itself; the user only needs their own frames.
    frames = exc.__traceback__.tb_next if exc.__traceback__ else None
    return "".join(traceback.format_exception(type(exc), exc, frames)).rstrip()


def _describe_load_failure(exc: BaseException) -> str:
    user_frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
                   if frame.filename == REWARD_CODE_FILENAME]
    error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    if not user_frames:
        return f"running the code failed: {error}"
    frame = user_frames[-1]
    code = f"\n    {frame.line}" if frame.line else ""
    return f"line {frame.lineno}: running the code failed: {error}{code}"


def _limit_address_space(limit_bytes: int) -> None:
    """A runaway allocation then raises MemoryError in the call instead of exhausting the machine."""
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    except (ValueError, OSError):
        pass  # macOS refuses RLIMIT_AS; the worker then runs without a memory limit


def _exit_when_parent_dies(parent_pid: int) -> None:
    """Reward code stuck in a loop never reads the closed pipe of a killed trainer; this still exits."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(PARENT_CHECK_INTERVAL_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
