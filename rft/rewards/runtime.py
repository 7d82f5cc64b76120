"""Scoring completions with the user's reward functions, safely.

`RewardRuntime` keeps one worker process (see worker.py) that has run the reward code, and asks it
for one call at a time: per-sample functions once per completion, batched functions once per
batch. Each call has its own timeout. A failed call never stops scoring: its completions are
scored as missing (NaN), the first message per function is kept, and a worker that timed out or
died is replaced before the next call.

Missing scores follow the GRPO spec: excluded from a function's mean, contributing 0 to the total.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from rft.rewards.analysis import (
    PER_SAMPLE,
    CheckResult,
    RewardCodeError,
    RewardFunctionInfo,
    analyse_source,
    find_reward_functions,
    parse_reward_code,
)
from rft.rewards.process import DEFAULT_MEMORY_LIMIT_MB, WorkerLost, WorkerProcess
from rft.rewards.worker import OUTPUT_LIMIT_CHARS, BoundedOutput, CallOutcome, CallRequest

DEFAULT_TIMEOUT_S = 10.0


@dataclass
class FunctionErrors:
    count: int  # completions whose score this function lost to an error
    first_message: str


@dataclass
class ScoreResult:
    per_function: dict[str, list[float]]  # NaN where missing
    total: list[float]  # weighted sum of the present scores; 0.0 when none is present
    errors: dict[str, FunctionErrors]  # only functions that had errors
    not_applicable: dict[str, int]  # completions a function returned None or NaN for, when any
    row_errors: list[str]  # per completion: "function: last line of the problem; ...", "" if none
    logs: list[tuple[str, str]]  # (function name, what it printed during this score() call)
    seconds: float

    def to_dataframe(self):
        """One row per completion: a column per function, the total, and the errors (the UI preview)."""
        import pandas as pd

        frame = pd.DataFrame(self.per_function, index=range(len(self.total)))
        frame["total"] = self.total
        frame["error"] = self.row_errors
        return frame


def check(source: str, timeout_s: float = DEFAULT_TIMEOUT_S,
          memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB) -> CheckResult:
    """Everything wrong with `source`: syntax, signatures, and errors when it runs (in a worker)."""
    try:
        tree = parse_reward_code(source)
    except RewardCodeError as exc:
        return CheckResult(errors=[str(exc)])
    functions, errors = find_reward_functions(tree)
    try:
        WorkerProcess(source, timeout_s, memory_limit_mb).close()
    except RewardCodeError as exc:
        errors.append(str(exc))
    return CheckResult(functions, errors)


class RewardRuntime:
    """The reward functions of one source, ready to score batches in a worker process."""

    def __init__(self, source: str, weights: dict[str, float] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S, memory_limit_mb: int | None = DEFAULT_MEMORY_LIMIT_MB):
        analysis = analyse_source(source)
        if not analysis.ok:
            raise RewardCodeError(analysis.message())
        unknown = sorted(set(weights or {}) - set(analysis.function_names))
        if unknown:
            raise RewardCodeError(f"weights name no reward function: {', '.join(unknown)} "
                                  f"(the functions are {', '.join(analysis.function_names)})")
        self.functions: list[RewardFunctionInfo] = analysis.functions
        self.weights = {name: float((weights or {}).get(name, 1.0)) for name in analysis.function_names}
        self.timeout_s = timeout_s
        self._source = source
        self._memory_limit_mb = memory_limit_mb
        self._worker: WorkerProcess | None = WorkerProcess(source, timeout_s, memory_limit_mb)

    @property
    def function_names(self) -> list[str]:
        return [info.name for info in self.functions]

    def score(self, prompts: list[str], completions: list[str], examples: list[dict],
              completion_ids: list[list[int]] | None = None) -> ScoreResult:
        """Every function's reward for every completion; examples hold each row's other columns.

        `completion_ids`, each completion's tokens up to and including EOS as sampled (the trainer
        has them; a preview of pasted text does not), reach batched functions as a keyword, as in
        TRL: a length in tokens needs them, since the text alone cannot say how the model split it.

        Failed calls are recorded in the result, never raised. Raises RewardCodeError only when a
        replacement worker can no longer run the code (a file it reads at import has gone, say).
        """
        if not len(prompts) == len(completions) == len(examples):
            raise ValueError(f"score() needs as many prompts ({len(prompts)}) and examples "
                             f"({len(examples)}) as completions ({len(completions)})")
        started = time.perf_counter()
        outcomes = {}
        for info in self.functions:
            if info.convention == PER_SAMPLE:
                outcomes[info.name] = self._score_per_sample(info, prompts, completions, examples)
            else:
                outcomes[info.name] = self._score_batched(info, prompts, completions, examples, completion_ids)
        return self._combine(outcomes, len(completions), time.perf_counter() - started)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def __enter__(self) -> RewardRuntime:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _score_per_sample(self, info: RewardFunctionInfo, prompts: list[str], completions: list[str],
                          examples: list[dict]) -> CallOutcome:
        scores, problems = [], []
        # Each call's prints are bounded in the worker; this bounds them per batch too, or a print in
        # every call would still write batch-size times the limit to the logs each step.
        output = BoundedOutput(OUTPUT_LIMIT_CHARS)
        for index, (prompt, completion, example) in enumerate(zip(prompts, completions, examples, strict=True)):
            outcome = self._call(CallRequest(info.name, (prompt, completion, example), {}, None))
            scores += outcome.scores
            problems += [f"completion {index}: {problem}" if problem else None for problem in outcome.problems]
            output.write(outcome.output)
        return CallOutcome(scores, problems, output.text())

    def _score_batched(self, info: RewardFunctionInfo, prompts: list[str], completions: list[str],
                       examples: list[dict], completion_ids: list[list[int]] | None) -> CallOutcome:
        if not completions:
            return CallOutcome([], [])
        columns = {key: [example.get(key) for example in examples] for key in _column_names(examples)}
        arguments = {"prompts": list(prompts), "completions": list(completions), **columns}
        if completion_ids is not None:
            arguments["completion_ids"] = [list(ids) for ids in completion_ids]
        if not info.takes_any_keyword:
            # Like TRL, columns arrive as keywords; without **kwargs pass only the ones it names.
            arguments = {name: value for name, value in arguments.items() if name in info.parameters}
        return self._call(CallRequest(info.name, (), arguments, len(completions)))

    def _call(self, request: CallRequest) -> CallOutcome:
        if self._worker is None:
            self._worker = WorkerProcess(self._source, self.timeout_s, self._memory_limit_mb)
        try:
            return self._worker.call(request, self.timeout_s)
        except WorkerLost as lost:
            self._worker = None
            return CallOutcome.failed(request.batch_size or 1, f"{lost}; a new worker took over")

    def _combine(self, outcomes: dict[str, CallOutcome], count: int, seconds: float) -> ScoreResult:
        errors, not_applicable, logs = {}, {}, []
        row_problems: list[list[str]] = [[] for _ in range(count)]
        for name, outcome in outcomes.items():
            failed = [problem for problem in outcome.problems if problem]
            if failed:
                errors[name] = FunctionErrors(len(failed), failed[0])
            inapplicable = sum(1 for score, problem in zip(outcome.scores, outcome.problems, strict=True)
                               if math.isnan(score) and not problem)
            if inapplicable:
                not_applicable[name] = inapplicable
            if outcome.output:
                logs.append((name, outcome.output))
            for index, problem in enumerate(outcome.problems):
                if problem:
                    row_problems[index].append(f"{name}: {problem.strip().splitlines()[-1]}")
        total = [
            sum(self.weights[name] * outcome.scores[index]
                for name, outcome in outcomes.items() if not math.isnan(outcome.scores[index]))
            for index in range(count)
        ]
        return ScoreResult(
            per_function={name: outcome.scores for name, outcome in outcomes.items()},
            total=[float(value) for value in total],
            errors=errors,
            not_applicable=not_applicable,
            row_errors=["; ".join(problems) for problems in row_problems],
            logs=logs,
            seconds=seconds,
        )


def preview(source: str, prompts: list[str], completions: list[str], examples: list[dict],
            weights: dict[str, float] | None = None,
            timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[CheckResult, ScoreResult | None]:
    """Score sample completions without training (the Try button); no scores when the code is unusable."""
    analysis = analyse_source(source)
    if not analysis.ok:
        return analysis, None
    try:
        with RewardRuntime(source, weights, timeout_s) as runtime:
            return analysis, runtime.score(prompts, completions, examples)
    except RewardCodeError as exc:
        return CheckResult(analysis.functions, [str(exc)]), None


def _column_names(examples: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for example in examples:
        names.update(dict.fromkeys(example))
    return list(names)
